/**
 * Reload in place (PROTOCOL.md section 6, "Reload"): what a daemon does when its supervisor
 * asks it to swap one of its plugins or to re-read its own configuration, without a handoff.
 *
 * The plugins themselves live in `@handoff/reload` (a worker per version, drain, probation,
 * rollback); this module only adapts anything shaped like its `ReloadManager` — and a
 * configuration hook — to the protocol's Reload, ReloadProgress and ReloadDone, so that the
 * daemon library does not depend on how plugins are run.
 */
import type { Reload, ReloadDone } from '@handoff/protocol';
import { FieldLimits, utf8Length } from '@handoff/protocol';
import { messageOf } from '@handoff/protocol/internal';

/** One step of a reload, as the plugin host reports it. */
export interface ReloadStep {
  readonly phase: string;
  readonly detail: string;
}

/** How a plugin reload ended, as the plugin host reports it (`@handoff/reload`'s ReloadReport has these fields). */
export interface PluginReloadReport {
  readonly outcome: 'reloaded' | 'rolledBack' | 'failed';
  /** The version active after the reload. */
  readonly version: string;
  /** One line when not reloaded. */
  readonly error: string | null;
  readonly durationMs: number;
  /** Calls cut by the drain deadline of the version that was replaced. */
  readonly cutCalls: number;
}

/** The daemon's plugins: `@handoff/reload`'s `ReloadManager`, or anything shaped like it. */
export interface DaemonPlugins {
  names(): readonly string[];
  reload(name: string, options: { readonly file?: string; readonly onProgress?: (step: ReloadStep) => void }): Promise<PluginReloadReport>;
}

/** What a configuration reload hook is told. */
export interface ConfigReloadContext {
  /** Report a step to the operator (it shows in `handoffctl reload --daemon-config`). */
  readonly progress: (detail: string) => void;
}

/**
 * Re-reads the daemon's own configuration and applies it. Resolves with a short name of
 * what is now in force (say, a version or a digest), shown to the operator; throws — and the
 * current configuration stays — when the new one is not valid.
 */
export type ConfigReloader = (context: ConfigReloadContext) => Promise<string | undefined>;

/** Runs one Reload; reports steps through `progress`; always resolves with the last message's fields. */
export type Reloader = (request: Reload, progress: (step: ReloadStep) => void) => Promise<Omit<ReloadDone, 'type' | 'requestId'>>;

/**
 * One line of at most `max` UTF-8 bytes (the protocol's limit), cut visibly: no line break
 * (operators see one line), no lone surrogate (it has no UTF-8 form: the message would not
 * encode, and the daemon must never fail to answer).
 */
export function clipText(text: string, max: number = FieldLimits.textMax): string {
  const line = text.replace(/\s*[\r\n]+\s*/g, ' ').replace(/\p{Surrogate}/gu, '\uFFFD');
  if (utf8Length(line) <= max) return line;
  let out = '';
  let bytes = 0;
  for (const ch of line) {
    const size = utf8Length(ch);
    if (bytes + size > max - 3) break;
    out += ch;
    bytes += size;
  }
  return `${out}…`;
}

/** What went wrong, as a string, whatever was thrown. */
function reasonOf(error: unknown): string {
  try {
    return messageOf(error);
  } catch {
    return 'an error that cannot be shown as text';
  }
}

/** A ReloadProgress phase is 1–32 letters. */
export function progressPhase(phase: string): string {
  return /^[A-Za-z]{1,32}$/.test(phase) ? phase : 'progress';
}

/** A ReloadDone from a plugin host's report, within the protocol's limits. */
function done(report: PluginReloadReport): Omit<ReloadDone, 'type' | 'requestId'> {
  const count = (n: unknown): number => (typeof n === 'number' && Number.isFinite(n) ? Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, Math.round(n))) : 0);
  // A host written in plain JavaScript may report anything: the answer must still encode.
  const outcome: unknown = report.outcome;
  const known = outcome === 'reloaded' || outcome === 'rolledBack' || outcome === 'failed';
  return {
    outcome: known ? outcome : 'failed',
    version: clipText(typeof report.version === 'string' ? report.version : '', FieldLimits.versionLabelMax),
    error: clipText(known ? (report.error ?? '') : `the plugin host reported an unknown outcome ${JSON.stringify(String(outcome)).slice(0, 80)}`),
    durationMs: count(report.durationMs),
    cutCalls: count(report.cutCalls),
  };
}

function failed(error: string, started: number, version = ''): Omit<ReloadDone, 'type' | 'requestId'> {
  return { outcome: 'failed', version, error: clipText(error), durationMs: Math.round(performance.now() - started), cutCalls: 0 };
}

/**
 * The daemon's answer to Reload, from its plugins and its configuration hook (either may be
 * missing: the request then fails with one line saying what the daemon lacks). Never
 * rejects: whatever happens, the daemon serves on with what it had.
 */
export function reloaderFor(plugins: DaemonPlugins | undefined, reloadConfig: ConfigReloader | undefined): Reloader {
  let configReloading = false;
  return async (request, progress) => {
    const started = performance.now();
    try {
      if (request.target === 'config') {
        if (!reloadConfig) return failed('this daemon has no configuration reload hook (runDaemon\'s reloadConfig); a handoff ("handoffctl upgrade") restarts it with its configuration', started);
        if (configReloading) return failed('a reload of the configuration is in progress; reload again once it ends', started);
        configReloading = true;
        try {
          const version = await reloadConfig({
            progress: (detail) => {
              try {
                progress({ phase: 'config', detail });
              } catch {
                // Reporting a step never fails the hook.
              }
            },
          });
          return { outcome: 'reloaded', version: clipText(typeof version === 'string' ? version : '', FieldLimits.versionLabelMax), error: '', durationMs: Math.round(performance.now() - started), cutCalls: 0 };
        } finally {
          configReloading = false;
        }
      }
      const names = plugins?.names() ?? [];
      if (!plugins || names.length === 0) return failed(`this daemon has no plugins (runDaemon's plugins), so none named "${request.name}"`, started);
      if (!names.includes(request.name)) return failed(`this daemon has no plugin named "${request.name}"; it has ${names.map((n) => `"${n}"`).join(', ')}`, started);
      const report = await plugins.reload(request.name, {
        ...(request.source === '' ? {} : { file: request.source }),
        onProgress: progress,
      });
      return done(report);
    } catch (error) {
      return failed(request.target === 'config' ? `the configuration was not reloaded (the current one stays): ${reasonOf(error)}` : reasonOf(error), started);
    }
  };
}

/** A ReloadProgress detail within the protocol's limits. */
export function progressDetail(detail: string): string {
  return clipText(detail);
}
