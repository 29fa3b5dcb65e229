/**
 * One loaded version of a plugin, in either mode: {@link WorkerVersion} runs it in a worker
 * thread of its own, {@link InThreadVersion} in the host's thread. The plugin
 * (`plugin.ts`) decides which version takes a call and when one is retired; a version only
 * runs calls, accounts for them in the shared tracker, and reports failures and crashes.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { ResourceLimits } from 'node:worker_threads';
import { PluginError, messageOf } from './errors.js';
import type { PluginErrorCode } from './errors.js';
import { disposeModule, errorFromShape, errorShape, isThenable, loadModule } from './module-load.js';
import type { PluginFunction } from './module-load.js';
import type { InFlightGuard, InFlightTracker } from './tracker.js';
import type { PluginMode, ReloadCause, VersionInfo } from './types.js';
import type { FromWorker, LoadFailureCause, ToWorker, WorkerInit } from './wire.js';

/**
 * The worker script. Run from source (vitest imports `src/*.ts`), it is the built one: a
 * worker thread runs plain Node, which cannot load TypeScript.
 */
const WORKER_URL = import.meta.url.endsWith('.ts') ? new URL('../dist/worker.js', import.meta.url) : new URL('./worker.js', import.meta.url);

/** How long a retired version's `dispose()` may take before its worker is terminated anyway. */
export const DISPOSE_TIMEOUT_MS = 2_000;

/** What a plugin tells its versions. */
export interface VersionContext {
  readonly plugin: string;
  readonly methods: readonly string[];
  readonly options: unknown;
  readonly tracker: InFlightTracker<number>;
  readonly hooks: VersionHooks;
  /** Worker mode: each worker's limits. */
  readonly resourceLimits: ResourceLimits | undefined;
}

/** How a version reports to its plugin. */
export interface VersionHooks {
  /** A call made by a caller (not a self-test call) threw, rejected or crashed. */
  onCallFailed(version: Version, error: string): void;
  /**
   * The version's worker died unexpectedly (`description`: how). Answers whether to restart
   * it from its file, and what happens next in words (the end of each crashed call's error).
   */
  onCrash(version: Version, description: string): { readonly restart: boolean; readonly consequence: string };
  /** A worker thread started (+1) or ended (-1). */
  onWorkers(delta: number): void;
}

/** A call cut at a deadline. */
export interface CutCall {
  readonly method: string;
  readonly ageMs: number;
}

/** One loaded version, whatever its mode. */
export interface Version {
  readonly mode: PluginMode;
  readonly info: VersionInfo;
  /** The worker died at least once. */
  readonly crashed: boolean;
  /** Worker mode: being restarted after a crash; calls are queued meanwhile. */
  readonly restarting: boolean;
  /** Runs `method`; `user` is false for self-test calls (not counted as the plugin's failures). */
  call(method: string, args: readonly unknown[], user: boolean): Promise<unknown>;
  /** In-thread mode only: the method's own return value. */
  callSync(method: string, args: readonly unknown[]): unknown;
  /** Rejects every call still in flight with `CUT` (`why` ends the message) and lists them. */
  cut(why: string): CutCall[];
  /** Worker mode: restarts a worker that died while the version was retiring (a rollback to it). */
  revive(): void;
  /** Runs the module's `dispose()` (bounded) and frees the version; resolves with what `dispose` threw. Idempotent. */
  close(): Promise<string | null>;
}

/** The {@link ReloadCause} of a load failure's error code. */
export function causeOf(code: PluginErrorCode): ReloadCause {
  switch (code) {
    case 'NOT_FOUND':
      return 'notFound';
    case 'CONTRACT':
      return 'contract';
    case 'LOAD_TIMEOUT':
      return 'loadTimeout';
    case 'SELF_TEST':
      return 'selfTest';
    case 'CRASHED':
      return 'crash';
    default:
      return 'load';
  }
}

const CODE_OF: Readonly<Record<LoadFailureCause, PluginErrorCode>> = { contract: 'CONTRACT', load: 'LOAD', selfTest: 'SELF_TEST' };

/**
 * The label a version gets without an exported `version`: the first 12 hex digits of the
 * file's SHA-256. Reading the file first is also how a missing module is told apart from one
 * that fails to import, with the path and the current directory in the message.
 */
async function fingerprint(plugin: string, file: string, given: string): Promise<string> {
  let source: Buffer;
  try {
    source = await readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const where = isAbsolute(given) ? file : `${file} ("${given}" from the current directory ${process.cwd()})`;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new PluginError('NOT_FOUND', plugin, `plugin ${plugin}: no module file at ${where}`);
    if (code === 'EISDIR') throw new PluginError('NOT_FOUND', plugin, `plugin ${plugin}: ${where} is a directory, not a module file`);
    throw new PluginError('LOAD', plugin, `plugin ${plugin}: cannot read ${where}: ${messageOf(error)}`);
  }
  return createHash('sha256').update(source).digest('hex').slice(0, 12);
}

/** Where a version is loaded from. */
export interface VersionSource {
  /** Absolute path. */
  readonly file: string;
  /** As the caller gave it (for messages). */
  readonly given: string;
  readonly generation: number;
}

function loadError(plugin: string, file: string, cause: LoadFailureCause, message: string): PluginError {
  return new PluginError(CODE_OF[cause], plugin, `plugin ${plugin}: ${file} ${message}`);
}

function timeoutError(plugin: string, file: string, timeoutMs: number, consequence: string): PluginError {
  return new PluginError('LOAD_TIMEOUT', plugin, `plugin ${plugin}: ${file} did not finish loading within ${timeoutMs} ms (import, setup(), selfTest()): ${consequence}`);
}

function closedError(plugin: string): PluginError {
  return new PluginError('CLOSED', plugin, `plugin ${plugin} is closed`);
}

function cutError(plugin: string, label: string, method: string, ageMs: number, why: string): PluginError {
  return new PluginError('CUT', plugin, `plugin ${plugin} version ${label}: ${method}() was cut after ${ageMs} ms: ${why}; whether it took effect is unknown`);
}

/** A call waiting for its worker's answer (or queued while the worker restarts). */
interface Pending {
  readonly guard: InFlightGuard;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
  readonly user: boolean;
}

interface Queued extends Pending {
  readonly args: readonly unknown[];
}

type WorkerStatus = 'loading' | 'live' | 'restarting' | 'down' | 'closed';

/**
 * A version running in a worker thread of its own. Nothing of it outlives `close()`: the
 * worker is terminated (its isolate and module graph freed) and no reference to it is kept.
 */
export class WorkerVersion implements Version {
  readonly mode = 'worker';
  readonly #ctx: VersionContext;
  readonly #init: WorkerInit;
  #info: VersionInfo;
  #worker: Worker | null = null;
  #status: WorkerStatus = 'loading';
  readonly #pending = new Map<number, Pending>();
  #queue: Queued[] = [];
  #downReason = '';
  #crashed = false;
  #onDisposed: ((error: string | null) => void) | null = null;
  #closing: Promise<string | null> | null = null;
  /** Aborted at close: a restart still spawning its worker terminates it instead of keeping it. */
  readonly #closed = new AbortController();
  readonly #loadTimeoutMs: number;
  /** The file's fingerprint when this version was loaded: a restart runs the same code or none. */
  readonly #hash: string;

  private constructor(ctx: VersionContext, source: VersionSource, hash: string, loadTimeoutMs: number) {
    this.#ctx = ctx;
    this.#hash = hash;
    this.#init = { url: pathToFileURL(source.file).href, methods: ctx.methods, options: ctx.options };
    this.#info = { generation: source.generation, label: hash, file: source.file, loadedAt: Date.now() };
    this.#loadTimeoutMs = loadTimeoutMs;
  }

  /**
   * Loads a version in a new worker: resolves once it is ready to take calls, rejects with a
   * {@link PluginError} (its worker already terminated) when it cannot be loaded in
   * `timeoutMs`, or when `signal` aborts (CLOSED).
   */
  static async load(ctx: VersionContext, source: VersionSource, timeoutMs: number, signal: AbortSignal): Promise<WorkerVersion> {
    const hash = await fingerprint(ctx.plugin, source.file, source.given);
    if (signal.aborted) throw closedError(ctx.plugin);
    const version = new WorkerVersion(ctx, source, hash, timeoutMs);
    const exported = await version.#spawn(timeoutMs, signal);
    version.#info = { ...version.#info, label: exported ?? hash, loadedAt: Date.now() };
    version.#status = 'live';
    return version;
  }

  get info(): VersionInfo {
    return this.#info;
  }

  get crashed(): boolean {
    return this.#crashed;
  }

  get restarting(): boolean {
    return this.#status === 'restarting';
  }

  /**
   * Starts a worker and waits for its `ready`. One set of listeners per worker serves both
   * the load and the worker's life after it, so no event falls between the two.
   */
  #spawn(timeoutMs: number, signal?: AbortSignal): Promise<string | null> {
    const { plugin } = this.#ctx;
    const file = this.#info.file;
    const { resourceLimits } = this.#ctx;
    const worker = new Worker(WORKER_URL, resourceLimits === undefined ? { workerData: this.#init } : { workerData: this.#init, resourceLimits });
    this.#worker = worker;
    this.#ctx.hooks.onWorkers(1);
    return new Promise<string | null>((resolve, reject) => {
      let loading = true;
      let lastError: string | null = null;
      const fail = (error: PluginError): void => {
        if (!loading) return;
        loading = false;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (this.#worker === worker) this.#worker = null;
        // Reject once the thread is gone, so that a refused version has freed everything.
        worker.terminate().then(
          () => {
            reject(error);
          },
          () => {
            reject(error);
          },
        );
      };
      const onAbort = (): void => {
        fail(closedError(plugin));
      };
      const timer = setTimeout(() => {
        fail(timeoutError(plugin, file, timeoutMs, 'its worker was terminated'));
      }, timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      worker.on('message', (message: FromWorker) => {
        if (!loading) {
          this.#onMessage(message);
          return;
        }
        if (!('type' in message)) return;
        if (message.type === 'ready') {
          loading = false;
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          // An idle version does not keep the host's process alive; a call in flight does.
          if (this.#pending.size === 0 && this.#queue.length === 0) worker.unref();
          resolve(message.version);
        } else if (message.type === 'loadFailed') {
          fail(loadError(plugin, file, message.cause, message.message));
        }
      });
      worker.on('error', (error: unknown) => {
        // The uncaught exception (or ERR_WORKER_OUT_OF_MEMORY) that is about to end the thread.
        const { name, message, code } = errorShape(error);
        lastError = code === 'ERR_WORKER_OUT_OF_MEMORY' ? message : `uncaught ${name}: ${message}`;
      });
      worker.on('exit', (code: number) => {
        this.#ctx.hooks.onWorkers(-1);
        if (loading) fail(new PluginError('LOAD', plugin, `plugin ${plugin}: ${file}: its worker exited with code ${code} while loading${lastError === null ? '' : ` (${lastError})`}`));
        else if (this.#worker === worker && this.#status !== 'closed') this.#onCrash(code, lastError);
        if (this.#worker === worker) this.#worker = null;
        this.#onDisposed?.(null);
      });
    });
  }

  call(method: string, args: readonly unknown[], user: boolean): Promise<unknown> {
    const guard = this.#ctx.tracker.enter(this.#info.generation, method);
    return new Promise((resolve, reject) => {
      const pending: Pending = { guard, resolve, reject, user };
      if (this.#status === 'live') this.#send(pending, args);
      else if (this.#status === 'restarting') this.#queue.push({ ...pending, args });
      else {
        guard.leave();
        if (this.#status === 'closed') {
          reject(closedError(this.#ctx.plugin));
          return;
        }
        const error = this.#downError(method);
        if (user) this.#ctx.hooks.onCallFailed(this, error.message);
        reject(error);
      }
    });
  }

  callSync(): never {
    throw new PluginError('WRONG_MODE', this.#ctx.plugin, `plugin ${this.#ctx.plugin} runs in worker mode: callSync() is for in-thread plugins; use call()`);
  }

  #send(pending: Pending, args: readonly unknown[]): void {
    const worker = this.#worker;
    if (worker === null) {
      pending.guard.leave();
      pending.reject(this.#downError(pending.guard.label));
      return;
    }
    const message: ToWorker = { id: pending.guard.id, method: pending.guard.label, args };
    try {
      worker.postMessage(message);
    } catch (error) {
      pending.guard.leave();
      pending.reject(new TypeError(`plugin ${this.#ctx.plugin}: the arguments of ${pending.guard.label}() cannot be sent to its worker (they must be structured-cloneable): ${messageOf(error)}`, { cause: error }));
      return;
    }
    if (this.#pending.size === 0) worker.ref();
    this.#pending.set(pending.guard.id, pending);
  }

  #onMessage(message: FromWorker): void {
    if ('type' in message) {
      if (message.type === 'disposed') this.#onDisposed?.(message.error);
      return;
    }
    const pending = this.#pending.get(message.id);
    if (pending === undefined) return; // cut meanwhile
    this.#pending.delete(message.id);
    pending.guard.leave();
    if (this.#pending.size === 0) this.#worker?.unref();
    if (message.ok) {
      pending.resolve(message.value);
      return;
    }
    const error = errorFromShape(message.error);
    if (pending.user) this.#ctx.hooks.onCallFailed(this, `${pending.guard.label}(): ${message.error.message}`);
    pending.reject(error);
  }

  /** The worker died on its own: every call on it fails, and the plugin says what comes next. */
  #onCrash(code: number, lastError: string | null): void {
    const { plugin } = this.#ctx;
    this.#worker = null;
    this.#crashed = true;
    const description = `worker exited with code ${code}${lastError === null ? '' : `: ${lastError}`}`;
    const { restart, consequence } = this.#ctx.hooks.onCrash(this, description);
    this.#status = restart ? 'restarting' : 'down';
    if (!restart) this.#downReason = `its worker crashed (${description})`;
    const crashed = [...this.#pending.values()];
    this.#pending.clear();
    for (const pending of crashed) {
      pending.guard.leave();
      const message = `plugin ${plugin} version ${this.#info.label} crashed (${description}) during ${pending.guard.label}(); ${consequence}`;
      if (pending.user) this.#ctx.hooks.onCallFailed(this, message);
      pending.reject(new PluginError('CRASHED', plugin, message));
    }
    if (restart) void this.#restart(description);
  }

  /**
   * Restarts the version from its file once; calls made meanwhile wait in the queue. Only
   * the same code: a file changed since (a deploy under way) is not run unreviewed under the
   * old label — without its self-test and probation — and the version stays down until a
   * reload.
   */
  async #restart(description: string): Promise<void> {
    let failure: string | null = null;
    try {
      const { plugin } = this.#ctx;
      const hash = await fingerprint(plugin, this.#info.file, this.#info.file);
      if (hash !== this.#hash) throw new PluginError('LOAD', plugin, `${this.#info.file} changed since this version was loaded (SHA-256 ${this.#hash}… now ${hash}…)`);
      await this.#spawn(this.#loadTimeoutMs, this.#closed.signal);
    } catch (error) {
      failure = messageOf(error);
    }
    if (this.#status !== 'restarting') return; // closed meanwhile
    const queued = this.#queue;
    this.#queue = [];
    if (failure === null) {
      this.#status = 'live';
      for (const { args, ...pending } of queued) this.#send(pending, args);
      if (this.#pending.size === 0) this.#worker?.unref();
      return;
    }
    this.#status = 'down';
    this.#downReason = `its worker crashed (${description}) and restarting it failed: ${failure}`;
    for (const pending of queued) {
      pending.guard.leave();
      const error = this.#downError(pending.guard.label);
      if (pending.user) this.#ctx.hooks.onCallFailed(this, error.message);
      pending.reject(error);
    }
  }

  #downError(method: string): PluginError {
    return new PluginError('CRASHED', this.#ctx.plugin, `plugin ${this.#ctx.plugin} version ${this.#info.label} cannot take ${method}(): ${this.#downReason}; reload a working version`);
  }

  revive(): void {
    if (this.#status !== 'down') return;
    this.#status = 'restarting';
    void this.#restart(this.#downReason);
  }

  cut(why: string): CutCall[] {
    const now = Date.now();
    const calls = [...this.#pending.values(), ...this.#queue];
    this.#pending.clear();
    this.#queue = [];
    return calls.map((pending) => {
      const ageMs = now - pending.guard.startedAt;
      pending.guard.leave();
      pending.reject(cutError(this.#ctx.plugin, this.#info.label, pending.guard.label, ageMs, why));
      return { method: pending.guard.label, ageMs };
    });
  }

  close(): Promise<string | null> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<string | null> {
    const wasLive = this.#status === 'live';
    this.#status = 'closed';
    this.#closed.abort();
    // The plugin drained (and cut) before closing: anything left is cut here.
    this.cut('its version was shut down');
    const worker = this.#worker;
    if (worker === null) return null;
    let disposeError: string | null = null;
    if (wasLive) {
      worker.ref();
      disposeError = await new Promise<string | null>((resolve) => {
        const timer = setTimeout(() => {
          resolve(`dispose() did not finish within ${DISPOSE_TIMEOUT_MS} ms`);
        }, DISPOSE_TIMEOUT_MS);
        this.#onDisposed = (error) => {
          clearTimeout(timer);
          resolve(error);
        };
        worker.postMessage({ type: 'dispose' } satisfies ToWorker);
      });
      this.#onDisposed = null;
    }
    await worker.terminate();
    this.#worker = null;
    return disposeError;
  }
}

/** What an in-thread call rejects with: the plugin's own Error, or an Error of whatever else it threw (as in worker mode). */
function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** A call of an in-thread version that returned a promise: cut-able until it settles. */
interface InThreadPending {
  readonly guard: InFlightGuard;
  /** Null for `callSync`: its caller holds the plugin's own promise. */
  readonly reject: ((error: unknown) => void) | null;
  done: boolean;
}

/** In-thread imports so far in this process: each gets a URL never used before. */
let inThreadImports = 0;

/**
 * A version imported into the host's thread under a URL of its own (`?v=<generation>&n=<count>`).
 * Node cannot evict an ES module, so its module stays in memory after `close()`.
 */
export class InThreadVersion implements Version {
  readonly mode = 'inThread';
  readonly crashed = false;
  readonly restarting = false;
  readonly info: VersionInfo;
  readonly #ctx: VersionContext;
  #functions: Readonly<Record<string, PluginFunction>>;
  #module: Readonly<Record<string, unknown>> | null;
  readonly #pending = new Map<number, InThreadPending>();
  #closed = false;
  #closing: Promise<string | null> | null = null;

  private constructor(ctx: VersionContext, info: VersionInfo, module: Readonly<Record<string, unknown>>, functions: Readonly<Record<string, PluginFunction>>) {
    this.#ctx = ctx;
    this.info = info;
    this.#module = module;
    this.#functions = functions;
  }

  /**
   * Imports the version in this thread. A load that does not finish in `timeoutMs` is
   * abandoned, not stopped: nothing can stop code running in this thread (an endless loop
   * at import hangs the host), only a top-level await that never settles can be walked away
   * from — and should it settle later, the module is disposed at once.
   */
  static async load(ctx: VersionContext, source: VersionSource, timeoutMs: number, signal: AbortSignal): Promise<InThreadVersion> {
    const hash = await fingerprint(ctx.plugin, source.file, source.given);
    if (signal.aborted) throw closedError(ctx.plugin);
    // Unique in the process, not per plugin: two plugins on one file, or a plugin loaded again
    // after close, must never share a module instance (and its module-scope state).
    const url = `${pathToFileURL(source.file).href}?v=${source.generation}&n=${++inThreadImports}`;
    const loading = loadModule(url, ctx.methods, ctx.options);
    let timer: NodeJS.Timeout | undefined;
    let onAbort: () => void = () => undefined;
    const outcome = await Promise.race([
      loading,
      new Promise<'timeout' | 'closed'>((resolve) => {
        timer = setTimeout(() => {
          resolve('timeout');
        }, timeoutMs);
        onAbort = () => {
          resolve('closed');
        };
        signal.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    if (outcome === 'timeout' || outcome === 'closed') {
      void loading.then((late) => (late.ok ? disposeModule(late.module) : null));
      if (outcome === 'closed') throw closedError(ctx.plugin);
      throw timeoutError(ctx.plugin, source.file, timeoutMs, 'abandoned (in-thread mode cannot stop a load; its module stays in memory)');
    }
    if (!outcome.ok) throw loadError(ctx.plugin, source.file, outcome.cause, outcome.message);
    const info: VersionInfo = { generation: source.generation, label: outcome.version ?? hash, file: source.file, loadedAt: Date.now() };
    return new InThreadVersion(ctx, info, outcome.module, outcome.functions);
  }

  call(method: string, args: readonly unknown[], user: boolean): Promise<unknown> {
    if (this.#closed) return Promise.reject(closedError(this.#ctx.plugin));
    let result: unknown;
    try {
      result = this.#run(method, args, user);
    } catch (error) {
      return Promise.reject(asError(error));
    }
    if (!isThenable(result)) return Promise.resolve(result);
    // A promise: our own one settles with it, or with CUT if a drain deadline comes first.
    return new Promise((resolve, reject) => {
      const pending = this.#track(method, reject);
      result.then(
        (value) => {
          if (pending.done) return;
          this.#settle(pending);
          resolve(value);
        },
        (error: unknown) => {
          if (pending.done) return;
          this.#settle(pending);
          if (user) this.#ctx.hooks.onCallFailed(this, `${method}(): ${messageOf(error)}`);
          reject(asError(error));
        },
      );
    });
  }

  callSync(method: string, args: readonly unknown[]): unknown {
    if (this.#closed) throw closedError(this.#ctx.plugin);
    const result = this.#run(method, args, true);
    if (!isThenable(result)) return result;
    // The caller holds the method's own promise; it stays counted (and drained) until that settles.
    const pending = this.#track(method, null);
    result.then(
      () => {
        if (!pending.done) this.#settle(pending);
      },
      (error: unknown) => {
        if (pending.done) return;
        this.#settle(pending);
        this.#ctx.hooks.onCallFailed(this, `${method}(): ${messageOf(error)}`);
      },
    );
    return result;
  }

  /**
   * Runs the method: a plain function call, counted in flight by the tracker's counter alone
   * while it runs (nothing can observe a synchronous call half-way, so it needs no guard).
   */
  #run(method: string, args: readonly unknown[], user: boolean): unknown {
    const { tracker } = this.#ctx;
    const key = this.info.generation;
    tracker.hold(key);
    try {
      // The plugin only passes contract methods, each checked to be a function at load.
      return (this.#functions[method] as PluginFunction)(...args);
    } catch (error) {
      if (user) this.#ctx.hooks.onCallFailed(this, `${method}(): ${messageOf(error)}`);
      throw asError(error);
    } finally {
      tracker.release(key);
    }
  }

  /** A method returned a promise: the call is in flight until it settles, listed and cut-able. */
  #track(method: string, reject: ((error: unknown) => void) | null): InThreadPending {
    const guard = this.#ctx.tracker.enter(this.info.generation, method);
    const pending: InThreadPending = { guard, reject, done: false };
    this.#pending.set(guard.id, pending);
    return pending;
  }

  #settle(pending: InThreadPending): void {
    pending.done = true;
    this.#pending.delete(pending.guard.id);
    pending.guard.leave();
  }

  revive(): void {
    // Nothing to restart in-thread.
  }

  /** Lets the callers go; the cut calls' code runs on (nothing can stop it in this thread). */
  cut(why: string): CutCall[] {
    const now = Date.now();
    const calls = [...this.#pending.values()];
    return calls.map((pending) => {
      const ageMs = now - pending.guard.startedAt;
      this.#settle(pending);
      pending.reject?.(cutError(this.#ctx.plugin, this.info.label, pending.guard.label, ageMs, why));
      return { method: pending.guard.label, ageMs };
    });
  }

  close(): Promise<string | null> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<string | null> {
    this.#closed = true;
    this.cut('its version was shut down');
    const module = this.#module;
    // Drop what we hold; the module itself stays in Node's module map.
    this.#module = null;
    this.#functions = {};
    if (module === null) return null;
    let timer: NodeJS.Timeout | undefined;
    const error = await Promise.race([
      disposeModule(module),
      new Promise<string>((resolve) => {
        timer = setTimeout(() => {
          resolve(`dispose() did not finish within ${DISPOSE_TIMEOUT_MS} ms`);
        }, DISPOSE_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
    return error;
  }
}
