/**
 * The one error class of `@handoff/reload`: {@link PluginError}, with a {@link PluginErrorCode}
 * to branch on and the name of the plugin it is about.
 */

/**
 * What went wrong:
 * - `NOT_FOUND`, `CONTRACT`, `LOAD`, `LOAD_TIMEOUT`, `SELF_TEST`: a version could not be
 *   loaded (the file is missing, lacks a contract method, threw at import or in `setup`,
 *   did not finish loading in time, failed a self-test);
 * - `CRASHED`: the worker running the version died while the call was in flight;
 * - `CUT`: the call was still running when its version's drain deadline passed (or the
 *   plugin was closed), and its caller was let go;
 * - `RELOAD_IN_PROGRESS`, `CLOSED`, `UNKNOWN_PLUGIN`, `WRONG_MODE`, `BAD_OPTIONS`: a misuse
 *   of the API, said in one line.
 */
export type PluginErrorCode =
  | 'NOT_FOUND'
  | 'CONTRACT'
  | 'LOAD'
  | 'LOAD_TIMEOUT'
  | 'SELF_TEST'
  | 'CRASHED'
  | 'CUT'
  | 'RELOAD_IN_PROGRESS'
  | 'CLOSED'
  | 'UNKNOWN_PLUGIN'
  | 'WRONG_MODE'
  | 'BAD_OPTIONS';

/** An error of `@handoff/reload`. Errors thrown by a plugin's own methods are not wrapped in it. */
export class PluginError extends Error {
  override readonly name: string = 'PluginError';
  readonly code: PluginErrorCode;
  /** The plugin's name ('' when the error is not about one plugin). */
  readonly plugin: string;

  constructor(code: PluginErrorCode, plugin: string, message: string, options: { readonly cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.plugin = plugin;
  }
}

/** The message of anything thrown. */
export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
