import type { ResourceLimits } from 'node:worker_threads';

/**
 * The public types of a hot plugin: its options, states, progress, reports and stats.
 * (Re-exported by `plugin.ts` and the package entry point.)
 */

/** A plugin's contract: the methods callers may call. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the parameters of each method are the plugin's own; `unknown[]` would refuse every typed method
export type PluginMethods = Record<string, (...args: any[]) => unknown>;

/**
 * What a contract type `M` must be: every property a method. Unlike {@link PluginMethods}
 * (a Record, which an interface only satisfies with an index signature), a plain
 * `interface Pricing { quote(sku: string): Quote }` satisfies it, and so does every
 * `PluginMethods`.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- as in PluginMethods
export type PluginContract<M> = { readonly [K in keyof M]: (...args: any[]) => unknown };

/**
 * How each version runs: `worker` (default) in a worker thread of its own — isolated,
 * killable, its memory freed when it is replaced; `inThread` in the host's thread — a call
 * is a plain function call, but a replaced version's module stays in memory for good.
 */
export type PluginMode = 'worker' | 'inThread';

/** A host-side check of a loaded candidate before it takes any call: throw to refuse it. */
export type HostSelfTest<M extends PluginContract<M>> = (call: <K extends keyof M & string>(method: K, ...args: Parameters<M[K]>) => Promise<Awaited<ReturnType<M[K]>>>) => Promise<void>;

/** Options of {@link HotPlugin.load}. */
export interface PluginOptions<M extends PluginContract<M>> {
  /** 1–64 of A–Z a–z 0–9 `_` `.` `-`: names the plugin in errors, stats and metrics. */
  readonly name: string;
  /** The plugin module (ESM `.js`/`.mjs`), relative to `process.cwd()` or absolute. */
  readonly file: string;
  /** The contract: each must be an exported function of the module. */
  readonly methods: readonly (keyof M & string)[];
  /** Default `worker`. */
  readonly mode?: PluginMode;
  /** Passed to the module's optional `setup(options)`; structured-cloneable in worker mode. */
  readonly options?: unknown;
  /** How long a version may take to load: import, `setup`, its `selfTest` and the host's. Default 10 000 ms. */
  readonly loadTimeoutMs?: number;
  /** How long a replaced version's calls may run on after a swap before they are cut. Default 30 000 ms. */
  readonly drainTimeoutMs?: number;
  /**
   * After a swap, more than `maxFailures` failed calls of the new version (thrown or rejected,
   * or a crash of its worker) within `ms` roll it back. Default `{ ms: 1000, maxFailures: 0 }`.
   */
  readonly probation?: { readonly ms: number; readonly maxFailures: number };
  /** Run against each candidate (and the first version) before it takes any call. */
  readonly selfTest?: HostSelfTest<M>;
  /**
   * Worker mode: limits of each version's worker (`worker_threads` ResourceLimits), e.g.
   * `{ maxOldGenerationSizeMb: 256 }`, so that a plugin that runs out of memory is a crash
   * of its worker (`CRASHED`, restart or rollback), not of the daemon.
   */
  readonly resourceLimits?: ResourceLimits;
}

/** One version of a plugin. */
export interface VersionInfo {
  /** 1 for the first version, one more for each candidate (also one that failed). */
  readonly generation: number;
  /** The module's exported `version` string, else the first 12 hex digits of the file's SHA-256. */
  readonly label: string;
  /** Absolute path of the module. */
  readonly file: string;
  /** When it was loaded, epoch ms. */
  readonly loadedAt: number;
}

/** Where a plugin is. Every kind but `closed` names the version that takes new calls. */
export type PluginState =
  | { readonly kind: 'active'; readonly version: VersionInfo }
  /** A candidate is being loaded and tested; `version` serves meanwhile. */
  | { readonly kind: 'preparing'; readonly version: VersionInfo; readonly candidate: string }
  /** `version` took over; `previous` is kept until `untilMs` (epoch ms) to roll back to. */
  | { readonly kind: 'probation'; readonly version: VersionInfo; readonly previous: VersionInfo; readonly untilMs: number }
  /** Probation passed; calls still running on `previous` finish (or are cut at the deadline). */
  | { readonly kind: 'draining'; readonly version: VersionInfo; readonly previous: VersionInfo }
  /** Serving the old version after a swapped version failed probation. */
  | { readonly kind: 'rolledBack'; readonly version: VersionInfo; readonly reason: string }
  /** Serving the old version after a candidate failed before the swap. */
  | { readonly kind: 'failed'; readonly version: VersionInfo; readonly reason: string }
  | { readonly kind: 'closed' };

/** A step of a reload, for an operator to watch. */
export interface ReloadProgress {
  readonly phase: 'preparing' | 'swapped' | 'draining' | 'probation' | 'rollingBack' | 'cut' | 'cleanedUp';
  readonly detail: string;
}

/** Why a reload did not end with the candidate serving. */
export type ReloadCause = 'notFound' | 'contract' | 'load' | 'loadTimeout' | 'selfTest' | 'probation' | 'crash';

/** How a version's calls ended when it was drained. */
export interface DrainReport {
  /** The drained version's label. */
  readonly version: string;
  /** Calls in flight when the drain began that settled by themselves. */
  readonly completed: number;
  /** Calls still running at the deadline: rejected with `CUT`. */
  readonly cut: readonly { readonly method: string; readonly ageMs: number }[];
}

/** How a reload ended. */
export interface ReloadReport {
  readonly plugin: string;
  readonly outcome: 'reloaded' | 'rolledBack' | 'failed';
  /** Label of the version active after the reload. */
  readonly version: string;
  /** Label of the version active before. */
  readonly from: string;
  /** Label of the candidate; null when it never loaded. */
  readonly to: string | null;
  /** One line when not reloaded. */
  readonly error: string | null;
  readonly cause: ReloadCause | null;
  /** From the request to settled: probation over, the replaced version drained and terminated. */
  readonly durationMs: number;
  /** Calls cut by drain deadlines during this reload. */
  readonly cutCalls: number;
  /** The drain of the version taken out of service (the old one, or the candidate rolled back); null when nothing was swapped. */
  readonly drain: DrainReport | null;
}

/** Counters and gauges of a plugin, for status pages and metrics. */
export interface PluginStats {
  readonly name: string;
  readonly mode: PluginMode;
  readonly state: PluginState['kind'];
  /** Label and generation of the version taking new calls. */
  readonly version: string;
  readonly generation: number;
  /** Reloads that ran to a report, whatever their outcome. */
  readonly reloads: number;
  /** Reloads whose candidate failed before the swap. */
  readonly failures: number;
  /** Reloads rolled back after the swap. */
  readonly rollbacks: number;
  /** Calls made through `call` and `callSync`. */
  readonly calls: number;
  /** Of those, the ones that threw, rejected or crashed (cut calls not included). */
  readonly callsFailed: number;
  /** Calls cut by a drain deadline or by `close`. */
  readonly callsCut: number;
  /** Calls in flight per version label (the active version always listed). */
  readonly inFlight: Readonly<Record<string, number>>;
  readonly lastReloadMs: number | null;
  readonly lastOutcome: ReloadReport['outcome'] | null;
  /** Worker mode: times the active version's worker crashed and was restarted from its file. */
  readonly restarts: number;
  /** Worker mode: the active version's worker is being restarted after a crash (calls wait for it). */
  readonly restarting: boolean;
  /** The last crash of a worker, one line; null if none crashed. */
  readonly lastCrash: string | null;
  /** Worker threads of this plugin alive now (0 in-thread; 2 or 3 during a reload). */
  readonly workers: number;
}
