/**
 * A hot plugin: a module of the daemon that can be replaced while the daemon runs, with no
 * restart and no failed call. A reload prepares the new version (load and self-test it),
 * swaps (calls made from then on go to it; the routing of each call is decided when
 * `call()` is invoked, so a call runs on exactly one version), drains the old version (its
 * calls in flight finish, up to a deadline that cuts the rest, loudly) and cleans it up —
 * after a probation during which a failing new version is rolled back and the old one, kept
 * for that, serves again.
 *
 * In worker mode (the default) each version runs in a worker thread of its own: a crash or a
 * hang is contained, and a replaced version's memory is freed with its worker. In in-thread
 * mode a call is a plain function call, but Node never evicts an ES module: every version
 * loaded stays in memory for the life of the process. README.md says when to pick which.
 */
import { resolve as resolvePath } from 'node:path';
import type { ResourceLimits } from 'node:worker_threads';
import { PluginError, messageOf } from './errors.js';
import { LIFECYCLE_EXPORTS } from './module-load.js';
import { InFlightTracker } from './tracker.js';
import type { DrainReport, PluginContract, PluginMethods, PluginMode, PluginOptions, PluginState, PluginStats, ReloadProgress, ReloadReport } from './types.js';
import { InThreadVersion, WorkerVersion, causeOf } from './version.js';
import type { CutCall, Version, VersionContext, VersionHooks, VersionSource } from './version.js';

export type { DrainReport, HostSelfTest, PluginContract, PluginMethods, PluginMode, PluginOptions, PluginState, PluginStats, ReloadCause, ReloadProgress, ReloadReport, VersionInfo } from './types.js';

/** Default {@link PluginOptions.loadTimeoutMs}. */
export const DEFAULT_LOAD_TIMEOUT_MS = 10_000;
/** Default {@link PluginOptions.drainTimeoutMs}. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;
/** Default {@link PluginOptions.probation}. */
export const DEFAULT_PROBATION: { readonly ms: number; readonly maxFailures: number } = { ms: 1_000, maxFailures: 0 };

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** Options of {@link HotPlugin.reload}. */
export interface ReloadOptions {
  /** The new version's module; default: the active version's file again (re-read from disk). */
  readonly file?: string;
  /** Each step, synchronously as it happens (a listener that throws is ignored). */
  readonly onProgress?: (progress: ReloadProgress) => void;
}

interface Settings {
  readonly name: string;
  readonly file: string;
  readonly methods: readonly string[];
  readonly mode: PluginMode;
  readonly options: unknown;
  readonly loadTimeoutMs: number;
  readonly drainTimeoutMs: number;
  readonly probation: { readonly ms: number; readonly maxFailures: number };
  readonly selfTest: ((call: (method: string, ...args: unknown[]) => Promise<unknown>) => Promise<void>) | undefined;
  readonly resourceLimits: ResourceLimits | undefined;
}

function badOptions(name: string, message: string): PluginError {
  return new PluginError('BAD_OPTIONS', name, `plugin ${name === '' ? '(unnamed)' : name}: ${message}`);
}

function isDuration(value: unknown, allowZero: boolean): value is number {
  return typeof value === 'number' && Number.isFinite(value) && (allowZero ? value >= 0 : value > 0);
}

/** Checks the options once, so that a mistake is one line at `load` and not a puzzle later. */
function settingsOf(options: PluginOptions<PluginMethods>): Settings {
  const name = typeof options.name === 'string' ? options.name : '';
  if (!NAME.test(name)) throw badOptions('', `the name ${JSON.stringify(options.name)} is not 1–64 of A–Z a–z 0–9 _ . -`);
  if (typeof options.file !== 'string' || options.file === '') throw badOptions(name, 'file must be the path of the plugin module');
  const methods: unknown = options.methods;
  if (!Array.isArray(methods) || methods.length === 0 || !methods.every((m) => typeof m === 'string' && m !== '')) throw badOptions(name, 'methods must list the contract: at least one method name');
  const duplicate = methods.find((m, i) => methods.indexOf(m) !== i) as string | undefined;
  if (duplicate !== undefined) throw badOptions(name, `methods lists ${duplicate} twice`);
  const lifecycle = (methods as string[]).filter((m) => LIFECYCLE_EXPORTS.includes(m));
  if (lifecycle.length > 0) throw badOptions(name, `${lifecycle.join(', ')} cannot be contract methods: ${LIFECYCLE_EXPORTS.join(', ')} are the module's lifecycle exports`);
  const mode: unknown = options.mode ?? 'worker';
  if (mode !== 'worker' && mode !== 'inThread') throw badOptions(name, `mode must be 'worker' or 'inThread', not ${JSON.stringify(mode)}`);
  const loadTimeoutMs = options.loadTimeoutMs ?? DEFAULT_LOAD_TIMEOUT_MS;
  if (!isDuration(loadTimeoutMs, false)) throw badOptions(name, `loadTimeoutMs must be a number of ms above 0, not ${String(loadTimeoutMs)}`);
  const drainTimeoutMs = options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
  if (!isDuration(drainTimeoutMs, true)) throw badOptions(name, `drainTimeoutMs must be a number of ms, 0 or more, not ${String(drainTimeoutMs)}`);
  const probation = options.probation ?? DEFAULT_PROBATION;
  if (typeof probation !== 'object' || !isDuration(probation.ms, true) || !Number.isInteger(probation.maxFailures) || probation.maxFailures < 0) {
    throw badOptions(name, `probation must be { ms: 0 or more, maxFailures: an integer, 0 or more }, not ${JSON.stringify(probation)}`);
  }
  if (options.selfTest !== undefined && typeof options.selfTest !== 'function') throw badOptions(name, 'selfTest must be a function');
  if (mode === 'worker') {
    try {
      structuredClone(options.options);
    } catch (error) {
      throw badOptions(name, `options must be structured-cloneable in worker mode (they are sent to each version's worker): ${messageOf(error)}`);
    }
  }
  return {
    name,
    file: options.file,
    methods: [...(methods as string[])],
    mode,
    options: options.options,
    loadTimeoutMs,
    drainTimeoutMs,
    probation: { ms: probation.ms, maxFailures: probation.maxFailures },
    selfTest: options.selfTest as Settings['selfTest'],
    resourceLimits: options.resourceLimits,
  };
}

/** The verdict of a probation. */
type Verdict = { readonly ok: true } | { readonly ok: false; readonly cause: 'probation' | 'crash' | 'closed'; readonly reason: string };

interface Probation {
  readonly version: Version;
  failures: number;
  readonly decide: (verdict: Verdict) => void;
}

/** A candidate that could not be prepared, and its label if it got as far as loading. */
interface Refusal {
  readonly error: PluginError;
  readonly label: string | null;
}

/** A drain under way: its report, and a way to stop it before it cuts anything (a rollback). */
interface Drain {
  readonly report: Promise<DrainReport>;
  readonly cancel: () => void;
}

/**
 * A plugin whose versions can be replaced while it serves calls. Create it with
 * {@link HotPlugin.load}; replace its version with {@link HotPlugin.reload}.
 */
export class HotPlugin<M extends PluginContract<M>> {
  readonly name: string;
  readonly mode: PluginMode;
  readonly #settings: Settings;
  readonly #methods: ReadonlySet<string>;
  readonly #tracker = new InFlightTracker<number>();
  readonly #ctx: VersionContext;
  /** Where new calls go. Set by `load` before the plugin is handed out. */
  #active!: Version;
  /** Every version alive: the active one, a candidate, a version draining. */
  readonly #versions = new Set<Version>();
  /** The version kept to roll back to, from the swap to the end of its drain. */
  #previous: Version | null = null;
  #state: PluginState = { kind: 'closed' };
  #generation = 0;
  #probation: Probation | null = null;
  #reloading = false;
  #reloadTask: Promise<ReloadReport> | null = null;
  #closed = false;
  #closeTask: Promise<DrainReport> | null = null;
  readonly #closing = new AbortController();
  #reloads = 0;
  #failures = 0;
  #rollbacks = 0;
  #calls = 0;
  #callsFailed = 0;
  #callsCut = 0;
  #restarts = 0;
  #workers = 0;
  #lastReloadMs: number | null = null;
  #lastOutcome: ReloadReport['outcome'] | null = null;
  #lastCrash: string | null = null;

  private constructor(settings: Settings) {
    this.name = settings.name;
    this.mode = settings.mode;
    this.#settings = settings;
    this.#methods = new Set(settings.methods);
    const hooks: VersionHooks = {
      onCallFailed: (version, error) => {
        this.#onCallFailed(version, error);
      },
      onCrash: (version, description) => this.#onCrash(version, description),
      onWorkers: (delta) => {
        this.#workers += delta;
      },
    };
    this.#ctx = { plugin: settings.name, methods: settings.methods, options: settings.options, tracker: this.#tracker, hooks, resourceLimits: settings.resourceLimits };
  }

  /**
   * Loads the first version (`file`, checked against the contract and self-tested).
   * Rejects with a {@link PluginError} saying why when it cannot: `BAD_OPTIONS`,
   * `NOT_FOUND`, `CONTRACT`, `LOAD`, `LOAD_TIMEOUT`, `SELF_TEST`.
   */
  static async load<M extends PluginContract<M>>(options: PluginOptions<M>): Promise<HotPlugin<M>> {
    const plugin = new HotPlugin<M>(settingsOf(options as PluginOptions<PluginMethods>));
    const first = await plugin.#prepare(plugin.#settings.file);
    if ('error' in first) throw first.error;
    plugin.#active = first;
    plugin.#state = { kind: 'active', version: first.info };
    return plugin;
  }

  /**
   * Calls `method` on the version active now (chosen synchronously, before this returns).
   * Rejects with the plugin's own error (its message and name) when the method throws, with
   * `CRASHED` when its worker dies meanwhile, with `CUT` when the call outlives its
   * version's drain deadline.
   */
  call<K extends keyof M & string>(method: K, ...args: Parameters<M[K]>): Promise<Awaited<ReturnType<M[K]>>> {
    if (this.#closed) return Promise.reject(this.#closedError());
    if (!this.#methods.has(method)) return Promise.reject(this.#notInContract(method));
    this.#calls++;
    return this.#active.call(method, args, true) as Promise<Awaited<ReturnType<M[K]>>>;
  }

  /**
   * In-thread mode only (`WRONG_MODE` otherwise): calls `method` and returns what it returns,
   * with no promise in between. Still counted in flight (until a returned promise settles),
   * so a reload drains it; a promise it returned is not cut (its caller holds it).
   */
  callSync<K extends keyof M & string>(method: K, ...args: Parameters<M[K]>): ReturnType<M[K]> {
    if (this.mode !== 'inThread') throw new PluginError('WRONG_MODE', this.name, `plugin ${this.name} runs in worker mode: callSync() is for in-thread plugins; use call()`);
    if (this.#closed) throw this.#closedError();
    if (!this.#methods.has(method)) throw this.#notInContract(method);
    this.#calls++;
    return this.#active.callSync(method, args) as ReturnType<M[K]>;
  }

  /** Where the plugin is now. */
  get state(): PluginState {
    return this.#state;
  }

  /** Counters and gauges (a snapshot). */
  get stats(): PluginStats {
    const inFlight: Record<string, number> = { [this.#active.info.label]: 0 };
    for (const version of this.#versions) {
      const { label, generation } = version.info;
      inFlight[label] = (inFlight[label] ?? 0) + this.#tracker.count(generation);
    }
    return {
      name: this.name,
      mode: this.mode,
      state: this.#state.kind,
      version: this.#active.info.label,
      generation: this.#active.info.generation,
      reloads: this.#reloads,
      failures: this.#failures,
      rollbacks: this.#rollbacks,
      calls: this.#calls,
      callsFailed: this.#callsFailed,
      callsCut: this.#callsCut,
      inFlight,
      lastReloadMs: this.#lastReloadMs,
      lastOutcome: this.#lastOutcome,
      restarts: this.#restarts,
      restarting: !this.#closed && this.#active.restarting,
      lastCrash: this.#lastCrash,
      workers: this.#workers,
    };
  }

  /**
   * Replaces the active version by `file` (default: its own file again). Resolves with a
   * report once settled — probation over, the old version drained and freed — whatever the
   * candidate did: a bad candidate is outcome `failed` (refused before the swap) or
   * `rolledBack` (after), and the version that served before serves on. Rejects only with
   * `RELOAD_IN_PROGRESS` (one reload at a time) or `CLOSED`.
   */
  reload(options: ReloadOptions = {}): Promise<ReloadReport> {
    if (this.#closed) return Promise.reject(this.#closedError());
    if (this.#reloading) {
      return Promise.reject(new PluginError('RELOAD_IN_PROGRESS', this.name, `plugin ${this.name}: a reload is already in progress (${this.#state.kind}); wait for its report`));
    }
    // Set before the reload's first (synchronous) progress event: a listener that asks for
    // another reload gets RELOAD_IN_PROGRESS too.
    this.#reloading = true;
    const task = this.#reload(options).finally(() => {
      this.#reloading = false;
      this.#reloadTask = null;
    });
    this.#reloadTask = task;
    return task;
  }

  /**
   * Stops taking calls (they reject with `CLOSED`), ends a reload under way (it rejects with
   * `CLOSED`), waits up to `timeoutMs` (default: drainTimeoutMs) for every call in flight,
   * cuts the rest, and disposes and terminates every version. Idempotent.
   */
  close(timeoutMs?: number): Promise<DrainReport> {
    this.#closeTask ??= this.#close(timeoutMs ?? this.#settings.drainTimeoutMs);
    return this.#closeTask;
  }

  async #reload(options: ReloadOptions): Promise<ReloadReport> {
    const started = performance.now();
    const { onProgress } = options;
    const progress = (phase: ReloadProgress['phase'], detail: string): void => {
      try {
        onProgress?.({ phase, detail });
      } catch {
        // A listener's bug must not break the reload.
      }
    };
    const { drainTimeoutMs, probation } = this.#settings;
    const from = this.#active;
    const given = options.file ?? from.info.file;
    this.#state = { kind: 'preparing', version: from.info, candidate: resolvePath(given) };
    progress('preparing', `loading ${resolvePath(given)} as generation ${this.#generation + 1} (${this.mode === 'worker' ? 'in a new worker' : 'in this thread'}); ${from.info.label} serves meanwhile`);

    const prepared = await this.#prepare(given);
    this.#throwIfClosed();
    if ('error' in prepared) {
      this.#state = { kind: 'failed', version: from.info, reason: prepared.error.message };
      progress('cleanedUp', `the candidate was refused and freed; ${from.info.label} serves on: ${prepared.error.message}`);
      return this.#finish(started, { outcome: 'failed', version: from.info.label, from: from.info.label, to: prepared.label, error: prepared.error.message, cause: causeOf(prepared.error.code), cutCalls: 0, drain: null });
    }
    const candidate = prepared;
    const { label, generation } = candidate.info;

    // The swap: from this statement on, every call() goes to the candidate.
    const previous = from;
    this.#previous = previous;
    this.#active = candidate;
    let timer: NodeJS.Timeout | undefined;
    const verdict = new Promise<Verdict>((resolve) => {
      const onClose = (): void => {
        decide({ ok: false, cause: 'closed', reason: 'closed' });
      };
      const decide = (v: Verdict): void => {
        if (this.#probation?.version !== candidate) return;
        this.#probation = null;
        // A failed probation sends the very next call to the previous version, not after the
        // verdict is awaited: calls made meanwhile must not go to a candidate that crashed.
        if (!v.ok && v.cause !== 'closed') this.#active = previous;
        clearTimeout(timer);
        this.#closing.signal.removeEventListener('abort', onClose);
        resolve(v);
      };
      this.#probation = { version: candidate, failures: 0, decide };
      timer = setTimeout(() => {
        decide({ ok: true });
      }, probation.ms);
      this.#closing.signal.addEventListener('abort', onClose, { once: true });
    });
    this.#state = { kind: 'probation', version: candidate.info, previous: previous.info, untilMs: Date.now() + probation.ms };
    progress('swapped', `new calls go to ${label} (generation ${generation}); ${this.#tracker.count(previous.info.generation)} in flight on ${previous.info.label}`);
    const oldDrain = this.#drain(previous, drainTimeoutMs, `it was still running on the replaced version when the drain deadline (drainTimeoutMs ${drainTimeoutMs}) passed`, progress);
    try {
      return await this.#settle(started, candidate, previous, verdict, oldDrain, progress);
    } finally {
      // Closed meanwhile: no drain of this reload may go on waiting (close drains everything).
      oldDrain.cancel();
    }
  }

  /** The reload after the swap: probation, then the old version drained and freed — or a rollback. */
  async #settle(started: number, candidate: Version, previous: Version, verdict: Promise<Verdict>, oldDrain: Drain, progress: (phase: ReloadProgress['phase'], detail: string) => void): Promise<ReloadReport> {
    const { drainTimeoutMs, probation } = this.#settings;
    const { label, generation } = candidate.info;
    const oldInFlight = this.#tracker.count(previous.info.generation);
    progress('draining', `${previous.info.label}: ${oldInFlight} calls in flight, finishing within ${drainTimeoutMs} ms`);
    progress('probation', `${label} on probation for ${probation.ms} ms: more than ${probation.maxFailures} failed calls or a crash roll it back to ${previous.info.label}`);

    const judged = await verdict;
    this.#throwIfClosed();
    if (judged.ok) {
      if (this.#tracker.count(previous.info.generation) > 0) this.#state = { kind: 'draining', version: candidate.info, previous: previous.info };
      const drain = await oldDrain.report;
      this.#throwIfClosed();
      const disposeError = await this.#retire(previous);
      this.#previous = null;
      this.#throwIfClosed();
      progress('cleanedUp', `${previous.info.label} (generation ${previous.info.generation}) ${this.#freed()}${disposeError === null ? '' : `; its dispose() failed: ${disposeError}`}`);
      this.#state = { kind: 'active', version: candidate.info };
      return this.#finish(started, { outcome: 'reloaded', version: label, from: previous.info.label, to: label, error: null, cause: null, cutCalls: drain.cut.length, drain });
    }

    // Rollback: the previous version takes every call again, before anything else happens.
    oldDrain.cancel();
    this.#active = previous;
    this.#previous = null;
    previous.revive();
    const error = `plugin ${this.name}: ${judged.reason}; rolled back to ${previous.info.label}`;
    this.#state = { kind: 'rolledBack', version: previous.info, reason: error };
    progress('rollingBack', `${judged.reason}; every call goes to ${previous.info.label} again`);
    const cutBefore = (await oldDrain.report).cut.length;
    const candidateDrain = this.#drain(candidate, drainTimeoutMs, `it was still running on the rolled-back version when the drain deadline (drainTimeoutMs ${drainTimeoutMs}) passed`, progress);
    let drain: DrainReport;
    try {
      drain = await candidateDrain.report;
    } finally {
      candidateDrain.cancel();
    }
    this.#throwIfClosed();
    const disposeError = await this.#retire(candidate);
    this.#throwIfClosed();
    progress('cleanedUp', `${label} (generation ${generation}) ${this.#freed()}${disposeError === null ? '' : `; its dispose() failed: ${disposeError}`}`);
    return this.#finish(started, {
      outcome: 'rolledBack',
      version: previous.info.label,
      from: previous.info.label,
      to: label,
      error,
      cause: judged.cause === 'crash' ? 'crash' : 'probation',
      cutCalls: cutBefore + drain.cut.length,
      drain,
    });
  }

  /**
   * Loads a new generation from `given` (relative to the current directory) and runs the
   * host's self-test on it, all within loadTimeoutMs. A refused candidate is freed before
   * this returns.
   */
  async #prepare(given: string): Promise<Version | Refusal> {
    const { loadTimeoutMs, selfTest } = this.#settings;
    const started = performance.now();
    const source: VersionSource = { file: resolvePath(given), given, generation: ++this.#generation };
    let version: Version;
    try {
      version = await (this.mode === 'worker' ? WorkerVersion.load(this.#ctx, source, loadTimeoutMs, this.#closing.signal) : InThreadVersion.load(this.#ctx, source, loadTimeoutMs, this.#closing.signal));
    } catch (error) {
      return { error: error instanceof PluginError ? error : new PluginError('LOAD', this.name, `plugin ${this.name}: ${messageOf(error)}`), label: null };
    }
    this.#versions.add(version);
    if (this.#closed) {
      await this.#retire(version);
      return { error: this.#closedError(), label: version.info.label };
    }
    if (selfTest === undefined) return version;

    const { label } = version.info;
    const remaining = Math.max(0, loadTimeoutMs - (performance.now() - started));
    let timer: NodeJS.Timeout | undefined;
    let onClose: () => void = () => undefined;
    const test = selfTest((method, ...args) => {
      if (!this.#methods.has(method)) return Promise.reject(this.#notInContract(method));
      return version.call(method, args, false);
    });
    test.catch(() => undefined); // judged below, or abandoned at the deadline
    const outcome = await Promise.race([
      test.then(
        () => null,
        (error: unknown) => error,
      ),
      new Promise<'timeout' | 'closed'>((resolve) => {
        timer = setTimeout(() => {
          resolve('timeout');
        }, remaining);
        onClose = () => {
          resolve('closed');
        };
        this.#closing.signal.addEventListener('abort', onClose, { once: true });
      }),
    ]);
    clearTimeout(timer);
    this.#closing.signal.removeEventListener('abort', onClose);
    if (outcome === null) return version;
    let error: PluginError;
    if (outcome === 'closed') error = this.#closedError();
    else if (outcome === 'timeout') error = new PluginError('LOAD_TIMEOUT', this.name, `plugin ${this.name}: ${label} (${source.file}) did not pass the host's selfTest within loadTimeoutMs ${loadTimeoutMs} (load included)`);
    else if (version.crashed) error = new PluginError('CRASHED', this.name, `plugin ${this.name}: ${label} (${source.file}) crashed during the host's selfTest: ${messageOf(outcome)}`);
    else error = new PluginError('SELF_TEST', this.name, `plugin ${this.name}: ${label} (${source.file}) failed the host's selfTest: ${messageOf(outcome)}`);
    await this.#retire(version);
    return { error, label };
  }

  /**
   * Waits up to `timeoutMs` for the calls in flight on `version`, then cuts those still
   * running (each rejects with CUT; a 'cut' progress names them). `cancel` stops the wait
   * without cutting: the version was put back into service.
   */
  #drain(version: Version, timeoutMs: number, why: string, progress: (phase: ReloadProgress['phase'], detail: string) => void): Drain {
    const { label, generation } = version.info;
    const atStart = this.#tracker.count(generation);
    const stop = new AbortController();
    const report = (async (): Promise<DrainReport> => {
      const idle = await this.#tracker.whenIdle(generation, timeoutMs, stop.signal);
      if (idle || stop.signal.aborted) return { version: label, completed: Math.max(0, atStart - this.#tracker.count(generation)), cut: [] };
      const cut: CutCall[] = version.cut(why);
      this.#callsCut += cut.length;
      if (cut.length > 0) progress('cut', `${cut.length} call${cut.length === 1 ? '' : 's'} on ${label} cut at the ${timeoutMs} ms deadline (rejected with CUT): ${cut.map((c) => `${c.method}() running for ${c.ageMs} ms`).join(', ')}`);
      return { version: label, completed: Math.max(0, atStart - cut.length), cut };
    })();
    return {
      report,
      cancel: () => {
        stop.abort();
      },
    };
  }

  /** Disposes and frees a version taken out of service. */
  async #retire(version: Version): Promise<string | null> {
    try {
      return await version.close();
    } finally {
      this.#versions.delete(version);
    }
  }

  #freed(): string {
    return this.mode === 'worker' ? 'terminated: its worker and its memory are freed' : 'released (in-thread mode: its module stays in memory)';
  }

  #finish(started: number, fields: Omit<ReloadReport, 'plugin' | 'durationMs'>): ReloadReport {
    const report: ReloadReport = { plugin: this.name, ...fields, durationMs: performance.now() - started };
    this.#reloads++;
    if (report.outcome === 'failed') this.#failures++;
    if (report.outcome === 'rolledBack') this.#rollbacks++;
    this.#lastReloadMs = report.durationMs;
    this.#lastOutcome = report.outcome;
    return report;
  }

  #onCallFailed(version: Version, error: string): void {
    this.#callsFailed++;
    const watch = this.#probation;
    if (watch?.version !== version) return;
    watch.failures++;
    const { ms, maxFailures } = this.#settings.probation;
    if (watch.failures > maxFailures) {
      watch.decide({ ok: false, cause: 'probation', reason: `${version.info.label} failed ${watch.failures} call${watch.failures === 1 ? '' : 's'} within ${ms} ms of the swap (more than maxFailures ${maxFailures}), the last: ${error}` });
    }
  }

  #onCrash(version: Version, description: string): { readonly restart: boolean; readonly consequence: string } {
    const { label, generation } = version.info;
    this.#lastCrash = `${label} (generation ${generation}): ${description}`;
    const watch = this.#probation;
    if (watch?.version === version) {
      const previous = this.#previous?.info.label ?? 'the previous version';
      watch.decide({ ok: false, cause: 'crash', reason: `${label} crashed during probation (${description})` });
      return { restart: false, consequence: `rolling back to ${previous}` };
    }
    if (this.#closed) return { restart: false, consequence: 'the plugin is closing' };
    if (version === this.#active) {
      this.#restarts++;
      return { restart: true, consequence: 'it is being restarted from its file (calls made meanwhile wait for it)' };
    }
    if (version === this.#previous) return { restart: false, consequence: `it was being replaced; ${this.#active.info.label} serves` };
    return { restart: false, consequence: `it was a candidate or being retired; ${this.#active.info.label} serves` };
  }

  async #close(timeoutMs: number): Promise<DrainReport> {
    this.#closed = true;
    this.#closing.abort();
    const active = this.#active;
    this.#state = { kind: 'closed' };
    const versions = [...this.#versions];
    const why = `it was still running when plugin ${this.name} was closed (close timeout ${timeoutMs} ms)`;
    const drains = await Promise.all(versions.map((version) => this.#drain(version, timeoutMs, why, () => undefined).report));
    await Promise.all(versions.map((version) => this.#retire(version)));
    // A reload under way ends (CLOSED) once its versions are gone; wait for it to let go of everything.
    await this.#reloadTask?.catch(() => undefined);
    return {
      version: active.info.label,
      completed: drains.reduce((sum, drain) => sum + drain.completed, 0),
      cut: drains.flatMap((drain) => drain.cut),
    };
  }

  #throwIfClosed(): void {
    if (this.#closed) throw this.#closedError();
  }

  #closedError(): PluginError {
    return new PluginError('CLOSED', this.name, `plugin ${this.name} is closed`);
  }

  #notInContract(method: string): PluginError {
    return new PluginError('CONTRACT', this.name, `plugin ${this.name}: ${method}() is not in its contract (${this.#settings.methods.join(', ')})`);
  }
}
