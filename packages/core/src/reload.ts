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

/** Cuts `text` to at most `max` UTF-8 bytes (the protocol's text limit), marking the cut. */
function clip(text: string, max: number = FieldLimits.textMax): string {
  if (utf8Length(text) <= max) return text;
  let out = '';
  for (const ch of text) {
    if (utf8Length(out + ch) > max - 3) break;
    out += ch;
  }
  return `${out}…`;
}

/** A ReloadProgress phase is 1–32 letters. */
export function progressPhase(phase: string): string {
  return /^[A-Za-z]{1,32}$/.test(phase) ? phase : 'progress';
}

/** A ReloadDone from a plugin host's report, within the protocol's limits. */
function done(report: PluginReloadReport): Omit<ReloadDone, 'type' | 'requestId'> {
  return {
    outcome: report.outcome,
    version: clip(report.version, FieldLimits.versionLabelMax),
    error: clip(report.error ?? ''),
    durationMs: Math.max(0, Math.round(report.durationMs)),
    cutCalls: report.cutCalls,
  };
}

function failed(error: string, started: number, version = ''): Omit<ReloadDone, 'type' | 'requestId'> {
  return { outcome: 'failed', version, error: clip(error), durationMs: Math.round(performance.now() - started), cutCalls: 0 };
}

/**
 * The daemon's answer to Reload, from its plugins and its configuration hook (either may be
 * missing: the request then fails with one line saying what the daemon lacks). Never
 * rejects: whatever happens, the daemon serves on with what it had.
 */
export function reloaderFor(plugins: DaemonPlugins | undefined, reloadConfig: ConfigReloader | undefined): Reloader {
  return async (request, progress) => {
    const started = performance.now();
    try {
      if (request.target === 'config') {
        if (!reloadConfig) return failed('this daemon has no configuration reload hook (runDaemon\'s reloadConfig); a handoff ("handoffctl upgrade") restarts it with its configuration', started);
        const version = await reloadConfig({ progress: (detail) => { progress({ phase: 'config', detail }); } });
        return { outcome: 'reloaded', version: clip(version ?? '', FieldLimits.versionLabelMax), error: '', durationMs: Math.round(performance.now() - started), cutCalls: 0 };
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
      return failed(request.target === 'config' ? `the configuration was not reloaded (the current one stays): ${messageOf(error)}` : messageOf(error), started);
    }
  };
}

/** A ReloadProgress detail within the protocol's limits. */
export function progressDetail(detail: string): string {
  return clip(detail);
}
