/**
 * The supervisor: holds the listeners, starts the daemon, replaces its program on request
 * with no refused connection and no lost write, restarts it when it dies, and after its own
 * crash converges from its journal. This class is the facade; the lifecycle machine of
 * `@handoff/protocol` decides, the {@link LifecycleDriver} carries out, one
 * {@link HandoffRun} runs each handoff.
 *
 * Observers subscribe to {@link SupervisorChannels} on `node:diagnostics_channel`.
 */
import { isAbsolute } from 'node:path';
import { DEFAULT_TIMEOUTS, pluginNameProblem } from '@handoff/protocol';
import type { DaemonProgram, LifecyclePhase, ProbationOutcome, ProgramChange, RestartPolicy, Revert, SupervisorPhase, Timeouts } from '@handoff/protocol';
import { SupervisorError, SupervisorErrorCode } from './errors.js';
import type { DrainProgressInfo } from './channels.js';
import type { HandoffResult, PhaseChange } from './handoff-run.js';
import { LifecycleDriver } from './lifecycle.js';
import type { HealthResult, ProbationPolicy } from './lifecycle.js';
import type { HeldListener } from './listeners.js';
import { toProgram } from './processes.js';
import type { ReloadResult, ReloadStepReport, ReloadTarget } from './reload.js';
import type { DaemonCommand } from './processes.js';

/** Options of {@link Supervisor}. */
export interface SupervisorOptions {
  readonly listeners: readonly HeldListener[];
  /** The daemon's program at start (a handoff may replace it; restarts run the last committed one). */
  readonly daemon: DaemonCommand;
  readonly controlSocket: string;
  /** The daemon's data directory, whose lock decides who writes; null for a daemon without one (handoffs overlap). */
  readonly dataDir: string | null;
  /** The journal file. */
  readonly journal: string;
  readonly timeouts?: Partial<Timeouts>;
  /** Reserve copies of each listener given to a daemon. Default 2. */
  readonly reserveCopies?: number;
  /**
   * How much lower (in nice steps) a successor runs until Begin, so that its start-up (module
   * loading, preload, warm-up) does not take CPU from the incumbent that still serves. Applied
   * only when the supervisor can give the priority back (root, CAP_SYS_NICE or RLIMIT_NICE).
   * Default 10; 0 turns it off.
   */
  readonly successorNice?: number;
  /**
   * Move idle client connections (keep-alive HTTP between requests, WebSocket between frames,
   * any a daemon declares movable) to the successor instead of closing them, with daemons
   * that announce `MoveConnections` (PROTOCOL.md section 6, "Moving connections"). Default true.
   */
  readonly moveConnections?: boolean;
  /** What to do when the daemon dies (see `RestartPolicy` of `@handoff/protocol`). */
  readonly restart?: Partial<RestartPolicy>;
  /** How long a started daemon has to answer on its control socket. Default 15 s. */
  readonly startTimeoutMs?: number;
  /**
   * Rollback after commit: a new version is watched for `windowMs` after it starts to serve
   * (default 0: not watched). Dying then, or failing `check` `failures` times in a row (checked
   * every `intervalMs`), hands back to the last known good version.
   */
  readonly probation?: Partial<ProbationPolicy>;
}

/** Defaults of {@link SupervisorOptions.probation}. */
export const DEFAULT_PROBATION: ProbationPolicy = { windowMs: 0, check: null, intervalMs: 1_000, failures: 3 };

/** What a reload may change while the supervisor runs (see {@link Supervisor.reconfigure}). */
export interface SupervisorReconfiguration {
  /** The configured program: the next handoff to it hands off to these settings. */
  readonly daemon: DaemonCommand;
  readonly timeouts?: Partial<Timeouts>;
  readonly restart?: Partial<RestartPolicy>;
  readonly probation?: Partial<ProbationPolicy>;
}

/** What {@link Supervisor.performHandoff} changes of the program for this handoff (and, once committed, for good). */
export interface HandoffRequest {
  /** `command`, `args` and `cwd` replace the current ones; `env` entries are set over the current environment. */
  readonly daemon?: ProgramChange;
}

/** Options of one handoff. */
export interface HandoffOptions {
  /** Called at every phase change of this handoff. */
  readonly onPhase?: (change: PhaseChange) => void;
  /** The new version's probation window for this handoff, instead of the configured one. */
  readonly probationMs?: number;
  /**
   * How long the incumbent may drain in this handoff, instead of the configured `drainMs`
   * (PrepareHandoff's `deadlineMs`): its tracked long-lived work still running then is cut.
   */
  readonly drainTimeoutMs?: number;
  /** Cut the incumbent's tracked long-lived work at once instead of waiting for it (PrepareHandoff's `cutWork`). */
  readonly cutWork?: boolean;
  /** Called each time the draining incumbent says what it still waits for. */
  readonly onDrainProgress?: (progress: DrainProgressInfo) => void;
}

/** What the supervisor knows of the versions it runs. */
export interface VersionsStatus {
  /** The program that serves, and that a restart starts. */
  readonly program: DaemonProgram;
  /** The program of the configuration. */
  readonly configured: DaemonProgram;
  /** `program` proved good (it served through its probation, or none is configured). */
  readonly good: boolean;
  /** Where a failing new version falls back to; null when none is known. */
  readonly lastGood: DaemonProgram | null;
  /** The serving version's probation, while it runs. */
  readonly probation: { readonly pid: number; readonly endsInMs: number } | null;
  readonly lastProbation: ProbationOutcome | null;
  readonly lastRevert: Revert | null;
}

/** Lifecycle of a {@link Supervisor}: the phases of the lifecycle machine (see `LifecyclePhase` of `@handoff/protocol`). */
export type SupervisorLifecycle = LifecyclePhase;

/** What the supervisor reports about itself. */
export interface SupervisorStatus {
  readonly lifecycle: SupervisorLifecycle;
  readonly pid: number;
  /** The daemon that serves; never a dead one. */
  readonly incumbent: {
    readonly pid: number;
    readonly buildId: string;
    readonly generation: number;
    readonly uptimeMs: number;
    /** Adopted by recovery: not a child of this supervisor. */
    readonly adopted: boolean;
    /** False while the supervisor (re)opens its control session. */
    readonly session: boolean;
  } | null;
  /** The handoff in progress; `drain`: what its incumbent last said it waits for while it drains (`at`: when, ms since the epoch). */
  readonly handoff: { readonly handoffId: string; readonly phase: SupervisorPhase; readonly drain: (DrainProgressInfo & { readonly at: number }) | null } | null;
  /** What is being reloaded in place now (`plugin validate`, `the daemon's configuration`), or null. */
  readonly reloading: string | null;
  readonly lastHandoff: HandoffResult | null;
  /** Restarts after deaths, since the supervisor started. */
  readonly restarts: number;
  /** Why the supervisor gave up (lifecycle `failed`), or null. */
  readonly failure: string | null;
  /** The program that serves, and that a restart starts. */
  readonly program: DaemonProgram;
  readonly versions: VersionsStatus;
  /** The last health check of a version on probation. */
  readonly health: HealthResult | null;
}

/** The supervisor. */
export class Supervisor {
  #timeouts: Timeouts;
  readonly #driver: LifecycleDriver;

  /** @throws SupervisorError HANDOFF_INVALID_ARGUMENT when no listener is given. */
  constructor(options: SupervisorOptions) {
    if (options.listeners.length === 0) throw new SupervisorError(SupervisorErrorCode.InvalidArgument, 'a supervisor needs at least one listener');
    this.#timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.#driver = new LifecycleDriver({
      listeners: options.listeners,
      program: toProgram(options.daemon),
      controlSocket: options.controlSocket,
      dataDir: options.dataDir,
      journal: options.journal,
      timeouts: this.#timeouts,
      reserveCopies: options.reserveCopies ?? 2,
      successorNice: options.successorNice ?? 10,
      moveConnections: options.moveConnections ?? true,
      restart: options.restart ?? {},
      startTimeoutMs: options.startTimeoutMs ?? 15_000,
      probation: { ...DEFAULT_PROBATION, ...options.probation },
    });
  }

  /**
   * Applies a reloaded configuration at once: timeouts, restart policy and probation apply to
   * what comes next. The new program becomes {@link configured}; handing off to it is the
   * caller's choice (a handoff whose change is the whole program, `replaceEnv` set).
   */
  reconfigure(change: SupervisorReconfiguration): void {
    this.#timeouts = { ...DEFAULT_TIMEOUTS, ...change.timeouts };
    this.#driver.reconfigure({ program: toProgram(change.daemon), timeouts: this.#timeouts, restart: change.restart ?? {}, probation: { ...DEFAULT_PROBATION, ...change.probation } });
  }

  /** The configured program (the configuration's, not necessarily the one that serves). */
  get configured(): DaemonProgram {
    return this.#driver.configured;
  }

  /**
   * Resolves once the probation of the daemon `pid` ended: `passed`, `reverted` (the last
   * known good version serves again), `failed` (nothing better was left to run), or `ended`
   * (superseded by another handoff, or the supervisor stops).
   */
  probationOf(pid: number): ReturnType<LifecycleDriver['probationOf']> {
    return this.#driver.probationOf(pid);
  }

  get lifecycle(): SupervisorLifecycle {
    return this.#driver.state.phase;
  }

  get timeouts(): Timeouts {
    return this.#timeouts;
  }

  /** Status for operators. A running handoff does not block it. */
  status(): SupervisorStatus {
    const state = this.#driver.state;
    const d = state.daemon;
    const run = this.#driver.run;
    return {
      lifecycle: state.phase,
      pid: process.pid,
      incumbent: d ? { pid: d.pid, buildId: d.buildId, generation: d.generation, uptimeMs: Date.now() - d.since, adopted: d.adopted, session: d.session } : null,
      handoff: run ? { handoffId: run.handoffId, phase: run.phase, drain: run.drain } : null,
      reloading: this.#driver.reloading,
      lastHandoff: this.#driver.lastHandoff,
      restarts: state.restarts,
      failure: state.failure,
      program: state.program,
      versions: {
        program: state.program,
        configured: this.#driver.configured,
        good: state.programGood,
        lastGood: state.lastGood,
        probation: state.probation ? { pid: state.probation.pid, endsInMs: Math.max(0, state.probation.until - Date.now()) } : null,
        lastProbation: state.lastProbation,
        lastRevert: state.lastRevert,
      },
      health: this.#driver.health,
    };
  }

  /**
   * Converges from the journal (adopting a live daemon, stopping orphans) or cold-starts the
   * daemon, and resolves once a daemon serves.
   * @throws SupervisorError HANDOFF_WRONG_STATE when called twice; HANDOFF_SPAWN when the first daemon cannot be started.
   */
  async start(): Promise<void> {
    if (this.lifecycle !== 'created') throw new SupervisorError(SupervisorErrorCode.WrongState, `start() in lifecycle ${this.lifecycle}`);
    this.#driver.feed({ type: 'start', now: Date.now() });
    await this.#driver.until((s) => s.phase === 'serving' || s.phase === 'failed' || s.phase === 'stopping' || s.phase === 'stopped');
    const { phase, failure } = this.#driver.state;
    if (phase !== 'serving') throw new SupervisorError(SupervisorErrorCode.Spawn, failure ?? `the daemon did not start: the supervisor is ${phase}`);
  }

  /**
   * Replaces the daemon's program, one handoff at a time. Resolves with the outcome once it
   * settled: who serves, and what happened after the commit point if it matters.
   * @throws SupervisorError HANDOFF_IN_PROGRESS while another runs or a reload is in progress; HANDOFF_NO_INCUMBENT when no daemon serves.
   */
  performHandoff(request: HandoffRequest = {}, options: HandoffOptions = {}): Promise<HandoffResult> {
    // The daemon reports on the reload on its control session, which the handoff is about to use.
    const reloading = this.#driver.reloading;
    if (reloading !== null) return Promise.reject(new SupervisorError(SupervisorErrorCode.InProgress, `a reload of ${reloading} is in progress; hand off once it ends`));
    const { drainTimeoutMs } = options;
    if (drainTimeoutMs !== undefined && (!Number.isInteger(drainTimeoutMs) || drainTimeoutMs < 1 || drainTimeoutMs > this.#timeouts.totalMs)) {
      return Promise.reject(new SupervisorError(SupervisorErrorCode.InvalidArgument, `a drain timeout of ${String(drainTimeoutMs)} ms is not a whole number of milliseconds from 1 to the total handoff timeout (${this.#timeouts.totalMs} ms); nothing was changed`));
    }
    return this.#driver.requestHandoff(request.daemon ?? {}, options);
  }

  /** What is being reloaded in place now, or null. */
  get reloading(): string | null {
    return this.#driver.reloading;
  }

  /**
   * Reloads one plugin of the serving daemon, or its own configuration, in place (PROTOCOL.md
   * section 6, "Reload"): no successor, no drain of connections, no seal. Resolves with the
   * daemon's outcome — `reloaded`, `rolledBack` or `failed` (the daemon serves on with what
   * it had), `refused` — and reports its steps to `onStep`.
   * @throws SupervisorError HANDOFF_IN_PROGRESS during a handoff or another reload;
   * HANDOFF_NO_INCUMBENT when no daemon serves, or its session ended before it answered;
   * HANDOFF_WRONG_STATE when the daemon cannot reload in place; HANDOFF_INVALID_ARGUMENT for
   * a malformed plugin name.
   */
  async reload(target: ReloadTarget, onStep?: (step: ReloadStepReport) => void): Promise<ReloadResult> {
    if ('plugin' in target) {
      const problem = pluginNameProblem(target.plugin);
      if (problem !== undefined) throw new SupervisorError(SupervisorErrorCode.InvalidArgument, problem);
      if (target.source !== undefined && !isAbsolute(target.source)) throw new SupervisorError(SupervisorErrorCode.InvalidArgument, `the module to load must be an absolute path (the daemon's working directory is not the caller's), not ${JSON.stringify(target.source.slice(0, 200))}`);
    }
    return this.#driver.reload(target, onStep);
  }

  /**
   * Stops the daemon (SIGTERM: it drains and seals; SIGKILL after `graceMs`) and every other
   * child; a handoff in progress finishes first.
   */
  async stop(graceMs = 30_000): Promise<void> {
    this.#driver.feed({ type: 'stopRequested', graceMs, now: Date.now() });
    await this.#driver.until((s) => s.phase === 'stopped');
  }

  /** SIGKILLs every daemon this supervisor started or adopted: the last resort when a stop takes too long (acknowledged writes are durable). */
  kill(): void {
    this.#driver.kill();
  }
}
