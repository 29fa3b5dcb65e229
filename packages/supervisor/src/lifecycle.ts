/**
 * The lifecycle driver: runs the supervisor's lifecycle machine of `@handoff/protocol` and
 * carries out its effects — recovery, cold starts, control sessions, handoff runs, stops —
 * feeding back what happened: sessions opened or lost, daemons spawned and dead, handoffs
 * finished. It decides nothing itself; the machine does (which daemon serves, when to
 * restart, when to give up), so every decision is in the exhaustively tested pure code.
 */
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { crashPoint } from '@handoff/core/internal';
import { capabilities as capabilityBits, initialLifecycleState, lifecycleTransition, sameProgram } from '@handoff/protocol';
import type { DaemonProgram, JournalPhase, JournalRecord, JournalVersions, LifecycleEffect, LifecycleEvent, LifecycleState, LifecycleTimer, ProbationOutcome, ProgramChange, RememberedVersions, RestartPolicy, SealReport, Timeouts } from '@handoff/protocol';
import { MachineDriver, assertNever, messageOf } from '@handoff/protocol/internal';
import { publish } from './channels.js';
import { SupervisorError, SupervisorErrorCode } from './errors.js';
import { HandoffRun } from './handoff-run.js';
import type { HandoffResult } from './handoff-run.js';
import type { HandoffOptions } from './supervisor.js';
import { JournalFile } from './journal-file.js';
import type { HeldListener } from './listeners.js';
import { describeExit, isAlive, processStartTime, readFailureFile, spawnDaemon, stopProcess } from './processes.js';
import type { SpawnOptions, SpawnedDaemon } from './processes.js';
import { recover } from './recovery.js';
import { SessionConnector } from './session.js';
import type { IncumbentSession } from './session.js';
import { reloadThrough } from './reload.js';
import type { ReloadResult, ReloadStepReport, ReloadTarget } from './reload.js';

/** The capabilities this supervisor offers. */
export const SUPERVISOR_CAPABILITIES = capabilityBits('SealProgress', 'RecoverFromDisk', 'ReserveListeners', 'CommitToSuccessor', 'Reload', 'DrainProgress', 'MoveConnections');

/**
 * The capabilities offered for a daemon with `dataDir`: without one, also `Overlap`; without
 * `moveConnections`, not `MoveConnections` (connections then drain at every handoff).
 */
export function supervisorCapabilities(dataDir: string | null, moveConnections = true): number {
  const base = moveConnections ? SUPERVISOR_CAPABILITIES : SUPERVISOR_CAPABILITIES & ~capabilityBits('MoveConnections');
  return (dataDir === null ? base | capabilityBits('Overlap') : base) >>> 0;
}

/** One health check of the daemon `pid`: whether it is healthy, and what was seen. */
export type HealthCheck = (pid: number) => Promise<{ readonly ok: boolean; readonly detail: string }>;

/** How a new version is watched after it starts to serve. */
export interface ProbationPolicy {
  /** How long (0: a new version is good once it serves). */
  readonly windowMs: number;
  /** Run every `intervalMs` during probation; `failures` failures in a row revert the version. */
  readonly check: HealthCheck | null;
  readonly intervalMs: number;
  readonly failures: number;
}

/** The last health check's result. */
export interface HealthResult {
  readonly pid: number;
  readonly ok: boolean;
  readonly detail: string;
  readonly at: number;
  /** Failures in a row so far. */
  readonly failuresInRow: number;
}

/** What the lifecycle driver is configured with. */
export interface LifecycleConfig {
  readonly listeners: readonly HeldListener[];
  /** The configured program: what runs unless the journal remembers another one derived from it. */
  readonly program: DaemonProgram;
  readonly controlSocket: string;
  /** Null: the daemon keeps no data directory (handoffs overlap, PROTOCOL.md section 7). */
  readonly dataDir: string | null;
  readonly journal: string;
  readonly timeouts: Timeouts;
  readonly reserveCopies: number;
  /** Nice steps a successor runs lower until Begin (see SupervisorOptions.successorNice). */
  readonly successorNice: number;
  readonly restart: Partial<RestartPolicy>;
  readonly startTimeoutMs: number;
  readonly probation: ProbationPolicy;
  /** Move idle connections to the successor at a handoff (PROTOCOL.md section 6, "Moving connections"). */
  readonly moveConnections: boolean;
}

/** What a reload may change while the supervisor runs. */
export type LiveConfig = Pick<LifecycleConfig, 'program' | 'timeouts' | 'restart' | 'probation'>;

/** A handoff asked for and not yet answered. */
interface Request {
  readonly resolve: (result: HandoffResult) => void;
  readonly reject: (error: SupervisorError) => void;
  readonly options: HandoffOptions;
  result: HandoffResult | null;
}

/** Drives the lifecycle machine. */
export class LifecycleDriver {
  #config: LifecycleConfig;
  readonly #journal: JournalFile;
  readonly #connector: SessionConnector;
  readonly #machine: MachineDriver<LifecycleState, LifecycleEvent, LifecycleEffect, LifecycleTimer>;
  /** Daemon processes this supervisor started, until they exit. */
  readonly #children = new Map<number, SpawnedDaemon>();
  /** The open control session with the serving daemon. */
  #session: { readonly pid: number; readonly session: IncumbentSession } | null = null;
  #run: HandoffRun | null = null;
  /** A reload in place under way, until the daemon answered it (or the supervisor gave up). */
  #reloading: { readonly what: string; readonly done: Promise<ReloadResult> } | null = null;
  readonly #requests = new Map<number, Request>();
  #nextRequest = 1;
  #lastHandoff: HandoffResult | null = null;
  #health: HealthResult | null = null;
  /** Set until the first recovery read the journal: what it remembered is taken once. */
  #firstRecovery = true;
  /** The configured program what runs was derived from (journaled: a configuration edited since then wins at the next cold start). */
  #derivedFrom: DaemonProgram;
  /** The result of a revert handoff (the machine's own, answering nobody), until it settled. */
  #revertResult: HandoffResult | null = null;
  readonly #startTimes = new Map<number, string | null>();
  /** Waiters for the machine to reach a phase. */
  #waiters: { readonly until: (s: LifecycleState) => boolean; readonly done: () => void }[] = [];

  constructor(config: LifecycleConfig) {
    this.#config = config;
    this.#derivedFrom = config.program;
    this.#journal = new JournalFile(config.journal);
    this.#connector = new SessionConnector({
      controlSocket: config.controlSocket,
      dataDir: config.dataDir,
      capabilities: supervisorCapabilities(config.dataDir, config.moveConnections),
      startTimeoutMs: config.startTimeoutMs,
      // Descriptors pass only to a child spawned with a descriptor channel (never to an adopted daemon).
      canPassDescriptors: (pid) => this.#children.get(pid)?.descriptors?.open === true,
    });
    this.#machine = new MachineDriver({
      initial: initialLifecycleState(config.program, config.restart, config.probation.windowMs),
      transition: lifecycleTransition,
      onEffect: (effect) => {
        this.#carryOut(effect);
      },
      onStep: ({ violation, before, after }) => {
        if (violation) publish('violation', { machine: 'lifecycle', error: violation.message });
        // Versions changed outside a handoff (a probation passed, a fallback): keep them durably.
        if (after.phase !== 'handingOff' && after.phase !== 'stopped' && versionsKey(after) !== versionsKey(before)) this.#recordIdle();
        const waiting = this.#waiters;
        this.#waiters = [];
        for (const w of waiting) {
          if (w.until(after)) w.done();
          else this.#waiters.push(w);
        }
      },
    });
  }

  get state(): LifecycleState {
    return this.#machine.state;
  }

  /** The handoff running now, if any. */
  get run(): HandoffRun | null {
    return this.#run;
  }

  /** The last handoff's result (also one a previous supervisor ran, from the journal). */
  get lastHandoff(): HandoffResult | null {
    return this.#lastHandoff;
  }

  /** What is being reloaded in place now, or null. */
  get reloading(): string | null {
    return this.#reloading?.what ?? null;
  }

  /**
   * Asks the serving daemon to reload in place (see Supervisor.reload). While it runs, a
   * handoff — one asked for, or a probation's revert the machine starts — waits for its
   * answer: the daemon reports on the session the handoff is about to use.
   */
  async reload(target: ReloadTarget, onStep?: (step: ReloadStepReport) => void): Promise<ReloadResult> {
    if (this.#reloading) throw new SupervisorError(SupervisorErrorCode.InProgress, `a reload of ${this.#reloading.what} is in progress; reload again once it ends`);
    if (this.#run || this.state.phase === 'handingOff') throw new SupervisorError(SupervisorErrorCode.InProgress, `a handoff${this.#run ? ` (${this.#run.handoffId})` : ''} is in progress; reload once it ends`);
    const kept = this.#session;
    const daemon = this.state.daemon;
    if (this.state.phase !== 'serving' || !daemon || kept?.pid !== daemon.pid || kept.session.channel.closed) {
      throw new SupervisorError(SupervisorErrorCode.NoIncumbent, `no daemon serves with an open control session (the supervisor is ${this.state.phase}); reload once one serves`);
    }
    const capabilities = (kept.session.hello.capabilities & supervisorCapabilities(this.#config.dataDir)) >>> 0;
    const done = reloadThrough({ ...kept, capabilities }, target, onStep);
    this.#reloading = { what: 'plugin' in target ? `plugin ${target.plugin}` : 'the daemon\'s configuration', done };
    try {
      return await done;
    } finally {
      this.#reloading = null;
    }
  }

  /** The last health check during a probation. */
  get health(): HealthResult | null {
    return this.#health;
  }

  get configured(): DaemonProgram {
    return this.#config.program;
  }

  /** Applies a reloaded configuration: the next handoffs, restarts and probations use it. */
  reconfigure(live: LiveConfig): void {
    this.#config = { ...this.#config, ...live };
    this.#derivedFrom = live.program;
    this.feed({ type: 'reconfigured', policy: live.restart, probationMs: live.probation.windowMs });
  }

  /**
   * Resolves once the probation of the daemon `pid` ended: passed, reverted or failed; or
   * `ended` when it ended otherwise (another handoff superseded it, the supervisor stops).
   */
  async probationOf(pid: number): Promise<ProbationOutcome | { readonly pid: number; readonly outcome: 'ended'; readonly reason: string }> {
    const done = (s: LifecycleState): boolean => s.lastProbation?.pid === pid || (s.probation?.pid !== pid && !(s.phase === 'handingOff' && s.handoff?.revert));
    await this.until(done);
    const last = this.state.lastProbation;
    if (last?.pid === pid) return last;
    return { pid, outcome: 'ended', reason: this.state.phase === 'stopping' || this.state.phase === 'stopped' ? 'the supervisor is stopping' : 'the version is no longer on probation' };
  }

  /** Pids of every daemon this supervisor started that has not exited, and of the serving one. */
  get pids(): number[] {
    const pids = new Set(this.#children.keys());
    const daemon = this.state.daemon;
    if (daemon) pids.add(daemon.pid);
    return [...pids];
  }

  feed(event: LifecycleEvent): void {
    this.#machine.feed(event);
  }

  /** Resolves once the machine's state satisfies `until`. */
  until(until: (s: LifecycleState) => boolean): Promise<void> {
    if (until(this.state)) return Promise.resolve();
    return new Promise((done) => this.#waiters.push({ until, done }));
  }

  /** Asks for a handoff; the machine answers with a run or a refusal. */
  requestHandoff(change: ProgramChange, options: HandoffOptions = {}): Promise<HandoffResult> {
    const requestId = this.#nextRequest++;
    const answer = new Promise<HandoffResult>((resolve, reject) => {
      this.#requests.set(requestId, { resolve, reject, options, result: null });
    });
    const { probationMs } = options;
    this.feed({ type: 'handoffRequested', requestId, change, now: Date.now(), ...(probationMs === undefined ? {} : { probationMs }) });
    return answer;
  }

  #carryOut(effect: Exclude<LifecycleEffect, { type: 'setTimer' | 'cancelTimer' }>): void {
    switch (effect.type) {
      case 'recover':
        void this.#recover();
        return;
      case 'coldStart':
        this.#coldStart(effect.program);
        return;
      case 'openSession':
        void this.#openSession(effect.pid);
        return;
      case 'runHandoff':
        void this.#runHandoff(effect.requestId, effect.program);
        return;
      case 'rejectHandoff': {
        const request = this.#requests.get(effect.requestId);
        this.#requests.delete(effect.requestId);
        request?.reject(new SupervisorError(effect.code, effect.message));
        return;
      }
      case 'handoffSettled': {
        const request = this.#requests.get(effect.requestId);
        this.#requests.delete(effect.requestId);
        if (!request) {
          // A revert the machine ran: it is the last handoff too.
          const revert = this.#revertResult;
          this.#revertResult = null;
          if (revert && effect.requestId < 0) {
            this.#lastHandoff = { ...revert, incumbentPid: effect.servingPid, aftermath: effect.aftermath };
            this.#recordIdle();
          }
          return;
        }
        if (effect.coldStart) {
          // Nothing served: the request was answered by a cold start.
          if (effect.servingPid === null) {
            request.reject(new SupervisorError(SupervisorErrorCode.Spawn, effect.aftermath ?? 'the daemon did not start'));
            return;
          }
          const started: HandoffResult = { handoffId: `start-${Date.now().toString(36)}`, committed: true, outcome: 'coldStart', abortReason: null, timings: { totalMs: 0, phases: {} }, incumbentPid: effect.servingPid, aftermath: 'no daemon served: the supervisor started one afresh', successorOutput: null, successorPid: effect.servingPid, drained: null };
          this.#lastHandoff = started;
          request.resolve(started);
          return;
        }
        if (!request.result) {
          // The run could not start (see #runHandoff): nothing was changed.
          request.reject(new SupervisorError(SupervisorErrorCode.NoIncumbent, 'the control session with the daemon closed as the handoff began; nothing was changed — try again'));
          return;
        }
        const result: HandoffResult = { ...request.result, incumbentPid: effect.servingPid, aftermath: effect.aftermath };
        this.#lastHandoff = result;
        this.#recordIdle();
        request.resolve(result);
        return;
      }
      case 'stopDaemon':
        void this.#stop(effect.pid, this.#config.timeouts.stopGraceMs);
        return;
      case 'stopAll':
        void this.#stopAll(effect.graceMs);
        return;
      case 'serving':
        publish('daemonServing', { pid: effect.pid, generation: effect.generation, how: effect.how });
        this.#recordIdle();
        return;
      case 'restartScheduled':
        publish('restart', { reason: effect.reason, delayMs: effect.delayMs, failuresInWindow: effect.failuresInWindow });
        return;
      case 'gaveUp':
        publish('gaveUp', { reason: effect.reason });
        return;
      case 'probationStarted':
        publish('probation', { pid: effect.pid, outcome: 'started', reason: null, ms: effect.ms });
        void this.#watch(effect.pid);
        return;
      case 'probationEnded':
        publish('probation', { pid: effect.pid, outcome: effect.outcome, reason: effect.reason, ms: null });
        return;
      case 'revert':
        publish('revert', { reason: effect.reason, how: effect.how, from: effect.from, to: effect.to });
        return;
      default:
        assertNever(effect, 'effect');
    }
  }

  async #recover(): Promise<void> {
    const { timeouts } = this.#config;
    let adopted: IncumbentSession | null;
    let record: JournalRecord | null;
    try {
      ({ adopted, record } = await recover({ journal: this.#journal, connector: this.#connector, dataDir: this.#config.dataDir, livenessMs: timeouts.livenessMs, startTimeoutMs: this.#config.startTimeoutMs, stopGraceMs: timeouts.stopGraceMs }));
    } catch (error) {
      // E.g. the data directory's lock file cannot be opened: say so, start nothing.
      this.feed({ type: 'recoveryFailed', reason: messageOf(error), now: Date.now() });
      return;
    }
    if (adopted) this.#keepSession(adopted.hello.pid, adopted);
    let versions: RememberedVersions | null = null;
    if (this.#firstRecovery) {
      this.#firstRecovery = false;
      versions = this.#remembered(record, adopted?.hello.pid ?? null);
      if (isHandoffResult(record?.lastHandoff)) this.#lastHandoff = record.lastHandoff;
    }
    this.feed({ type: 'recovered', adopted: adopted ? { pid: adopted.hello.pid, buildId: adopted.hello.buildId } : null, now: Date.now(), versions });
  }

  /**
   * What a previous supervisor's journal remembers of the versions, for this one to go on with.
   * The program the adopted daemon runs is the journal's (its successor's, once a handoff
   * committed). When nothing is adopted, a configuration edited since (its [daemon] program
   * differs from the one the record was derived from) wins: the operator changed it.
   */
  #remembered(record: JournalRecord | null, adoptedPid: number | null): RememberedVersions | null {
    const v = record?.versions;
    if (!record || !v) return null;
    const isSuccessor = adoptedPid !== null && adoptedPid === record.successor?.pid;
    const running = isSuccessor && v.next ? v.next : v.current;
    if (adoptedPid === null && !sameProgram(v.configured, this.#config.program)) {
      const good = v.currentGood ? v.current : v.lastGood;
      return { program: this.#config.program, programGood: false, lastGood: good && !sameProgram(good, this.#config.program) ? good : null, generation: v.generation, servingSince: null };
    }
    // What runs was derived from the record's configuration, whatever the file says now.
    this.#derivedFrom = v.configured;
    if (isSuccessor && v.next) {
      // The handoff committed (or was about to): the old program is the fallback, as at a commit.
      return { program: running, programGood: false, lastGood: v.currentGood || v.lastGood === null ? v.current : v.lastGood, generation: v.generation, servingSince: null };
    }
    const same = adoptedPid !== null && adoptedPid === record.incumbent?.pid;
    return { program: running, programGood: v.currentGood, lastGood: v.lastGood, generation: v.generation, servingSince: same ? v.servingSince : null };
  }

  #spawnOptions(): Omit<SpawnOptions, 'role'> {
    const { timeouts } = this.#config;
    return {
      listeners: this.#config.listeners,
      reserveCopies: this.#config.reserveCopies,
      controlSocket: this.#config.controlSocket,
      dataDir: this.#config.dataDir,
      timing: { heartbeatMs: timeouts.heartbeatMs, livenessMs: timeouts.livenessMs, helloMs: timeouts.helloMs },
      // Without moving, no descriptor channel: a daemon then neither announces MoveConnections nor gives up Overlap for it.
      fdChannel: this.#config.moveConnections,
    };
  }

  /**
   * Tracks a child until it exits; its death is fed to the machine whatever the phase. A cold
   * start's death before it served says what the daemon last wrote, if it did (`failureFile`).
   */
  #track(spawned: SpawnedDaemon, failureFile?: string): void {
    this.#children.set(spawned.pid, spawned);
    this.#startTimes.set(spawned.pid, processStartTime(spawned.pid));
    void spawned.exited.then((exit) => {
      this.#children.delete(spawned.pid);
      this.#startTimes.delete(spawned.pid);
      // Its last words matter only from a daemon that never served (one that served writes none).
      const words = readFailureFile(failureFile);
      const starting = this.state.phase === 'starting' && this.state.startingPid === spawned.pid;
      const said = starting ? words?.split('\n').map((l) => l.trim()).filter((l) => l !== '').slice(-3).join(' | ').slice(-600) : undefined;
      const reason = `${describeExit(exit)}${said ? ` — its last words: ${said}` : ''}`;
      publish('daemonExited', { pid: spawned.pid, reason });
      this.feed({ type: 'daemonExited', pid: spawned.pid, reason, now: Date.now() });
    });
  }

  #coldStart(program: DaemonProgram): void {
    let spawned: SpawnedDaemon;
    const failureFile = join(dirname(this.#config.controlSocket), `.failure-start-${randomBytes(4).toString('hex')}`);
    try {
      spawned = spawnDaemon(program, { role: 'cold', ...this.#spawnOptions(), failureFile });
    } catch (error) {
      // (Fed while this effect runs: the driver handles it right after the current transition.)
      this.feed({ type: 'coldStartFailed', pid: null, reason: messageOf(error), now: Date.now() });
      return;
    }
    const { pid } = spawned;
    this.#track(spawned, failureFile);
    publish('coldStart', { pid, command: program.command });
    this.feed({ type: 'coldSpawned', pid });
    crashPoint('supervisor:cold-started');
    void (async () => {
      const session = await this.#connector.awaitSession(pid, () => !this.#children.has(pid));
      if (session) {
        this.#keepSession(pid, session);
        this.feed({ type: 'sessionOpened', pid, buildId: session.hello.buildId, now: Date.now() });
      } else if (this.#children.has(pid)) {
        // Alive but silent: the machine has it stopped. (A death was fed when it was reaped.)
        const reason = this.#connector.refusal(pid) ?? `the daemon (pid ${pid}) did not answer on its control socket ${this.#config.controlSocket} within ${this.#config.startTimeoutMs} ms`;
        this.feed({ type: 'coldStartFailed', pid, reason, now: Date.now() });
      }
    })();
  }

  /** Makes sure a session with `pid` is open: the one kept, or a new one. */
  async #openSession(pid: number): Promise<void> {
    const kept = this.#session;
    if (kept?.pid === pid && !kept.session.channel.closed) {
      this.feed({ type: 'sessionOpened', pid, buildId: kept.session.hello.buildId, now: Date.now() });
      return;
    }
    const gone = (): boolean => (this.#children.has(pid) ? false : !isAlive(pid));
    const session = await this.#connector.awaitSession(pid, gone);
    if (session) {
      this.#keepSession(pid, session);
      this.feed({ type: 'sessionOpened', pid, buildId: session.hello.buildId, now: Date.now() });
    } else if (gone()) {
      // A child's exit is fed when it is reaped; an adopted daemon's death only here.
      if (!this.#children.has(pid)) this.feed({ type: 'daemonExited', pid, reason: 'gone', now: Date.now() });
    } else {
      this.feed({ type: 'sessionFailed', pid, reason: this.#connector.refusal(pid) ?? `no answer on ${this.#config.controlSocket} within ${this.#config.startTimeoutMs} ms`, now: Date.now() });
    }
  }

  /** Keeps `session` as the one with the serving daemon and watches it; the machine hears when it ends. */
  #keepSession(pid: number, session: IncumbentSession): void {
    const previous = this.#session;
    this.#session = { pid, session };
    if (previous && previous.session !== session) previous.session.channel.close('replaced');
    if (!this.#startTimes.has(pid)) this.#startTimes.set(pid, processStartTime(pid));
    session.channel.on('close', (reason) => {
      if (this.#session?.session !== session) return; // replaced: not news
      this.#session = null;
      publish('sessionClosed', { pid, reason });
      // Whether the daemon died is learnt by reopening the session (#openSession).
      this.feed({ type: 'sessionLost', pid });
    });
  }

  async #runHandoff(requestId: number, program: DaemonProgram): Promise<void> {
    // A reload in place reports on the session the handoff is about to use: let it answer first.
    await this.#reloading?.done.catch(() => undefined);
    const request = this.#requests.get(requestId);
    const drainTimeoutMs = request?.options.drainTimeoutMs;
    const daemon = this.state.daemon;
    const kept = this.#session;
    if (!daemon || kept?.pid !== daemon.pid || kept.session.channel.closed) {
      // The session closed just now (the machine hears of it right after this): nothing
      // was started; the request is refused when the machine settles it.
      this.feed({ type: 'handoffFinished', requestId, outcome: 'rolledBack', now: Date.now() });
      return;
    }
    const run = new HandoffRun(
      {
        // This handoff's own drain timeout, if asked for: the drain's deadline and its phase timer.
        timeouts: drainTimeoutMs === undefined ? this.#config.timeouts : { ...this.#config.timeouts, drainMs: drainTimeoutMs, drainGraceMs: Math.min(this.#config.timeouts.drainGraceMs, drainTimeoutMs) },
        capabilities: supervisorCapabilities(this.#config.dataDir, this.#config.moveConnections),
        cutWork: request?.options.cutWork ?? false,
        onDrainProgress: request?.options.onDrainProgress,
        successorNice: this.#config.successorNice,
        spawnOptions: this.#spawnOptions(),
        writeJournal: (phase, handoffId, successor, seal) => {
          this.#writeJournal(phase, handoffId, successor, seal);
        },
        onSpawned: (spawned) => {
          this.#track(spawned);
          this.feed({ type: 'successorSpawned', requestId, pid: spawned.pid });
        },
        onPhase: request?.options.onPhase,
      },
      { pid: daemon.pid, session: kept.session, exited: this.#children.get(daemon.pid)?.exited ?? null, descriptors: this.#children.get(daemon.pid)?.descriptors ?? null },
      program,
    );
    this.#run = run;
    let result: HandoffResult;
    try {
      result = await run.execute();
    } finally {
      this.#run = null;
    }
    if (request) request.result = result;
    else this.#revertResult = result;
    this.feed({ type: 'handoffFinished', requestId, outcome: result.outcome, now: Date.now() });
  }

  /** Stops a daemon; the death of one that is not a child (adopted) is fed here, a child's when reaped. */
  async #stop(pid: number, graceMs: number): Promise<void> {
    const kept = this.#session;
    if (kept?.pid === pid) {
      this.#session = null;
      kept.session.channel.close('stopping the daemon');
    }
    const child = this.#children.get(pid);
    await stopProcess(pid, graceMs, child?.exited);
    if (!child) this.feed({ type: 'daemonExited', pid, reason: 'stopped by the supervisor', now: Date.now() });
  }

  /** Stops the serving daemon (it drains and seals on SIGTERM) and every other child. */
  async #stopAll(graceMs: number): Promise<void> {
    const serving = this.state.daemon?.pid;
    const stops: Promise<void>[] = [];
    if (serving !== undefined) stops.push(this.#stop(serving, graceMs));
    for (const pid of this.#children.keys()) if (pid !== serving) stops.push(this.#stop(pid, Math.min(graceMs, this.#config.timeouts.stopGraceMs)));
    await Promise.all(stops);
    this.#recordIdle();
    this.feed({ type: 'stopped' });
  }

  /** Runs the health check while `pid` is on probation; feeds `healthFailed` after enough failures in a row. */
  async #watch(pid: number): Promise<void> {
    let inRow = 0;
    const onProbation = (): boolean => this.state.probation?.pid === pid;
    while (onProbation()) {
      const { check, intervalMs, failures } = this.#config.probation;
      if (!check) return;
      let result: { ok: boolean; detail: string };
      try {
        result = await check(pid);
      } catch (error) {
        result = { ok: false, detail: messageOf(error) };
      }
      if (!onProbation()) return;
      inRow = result.ok ? 0 : inRow + 1;
      this.#health = { pid, ok: result.ok, detail: result.detail, at: Date.now(), failuresInRow: inRow };
      publish('health', { pid, ok: result.ok, detail: result.detail, failuresInRow: inRow });
      if (inRow >= failures) {
        inRow = 0;
        this.feed({ type: 'healthFailed', pid, reason: `the health check failed ${failures} time${failures === 1 ? '' : 's'} in a row: ${result.detail}`, now: Date.now() });
        if (!onProbation()) return;
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  }

  /** Records that no handoff runs, naming the serving daemon; a failure is reported, not fatal (recovery checks the lock and the control socket anyway). */
  #recordIdle(): void {
    try {
      this.#writeJournal('idle', null, null, null);
    } catch (error) {
      publish('journalError', { reason: messageOf(error) });
    }
  }

  /** SIGKILLs every daemon: the last resort when a graceful stop takes too long. */
  kill(): void {
    for (const pid of this.pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }

  #versions(): JournalVersions {
    const s = this.state;
    return {
      configured: this.#derivedFrom,
      current: s.program,
      currentGood: s.programGood,
      lastGood: s.lastGood,
      next: s.handoff?.program ?? null,
      generation: s.daemon?.generation ?? s.generation,
      servingSince: s.daemon && s.phase !== 'stopping' ? s.daemon.since : null,
    };
  }

  /**
   * Writes the journal.
   * @throws SupervisorError HANDOFF_JOURNAL when it cannot be written (a handoff then aborts: its next step must not be taken unrecorded).
   */
  #writeJournal(phase: JournalPhase, handoffId: string | null, successor: { pid: number; startTime: string | null } | null, seal: SealReport | null): void {
    const daemon = this.state.daemon;
    const record: JournalRecord = {
      v: 1,
      phase,
      handoffId,
      writtenAt: Date.now(),
      supervisorPid: process.pid,
      incumbent: daemon && this.state.phase !== 'stopping' ? { pid: daemon.pid, startTime: this.#startTimes.get(daemon.pid) ?? processStartTime(daemon.pid) } : null,
      successor,
      seal,
      versions: this.#versions(),
      lastHandoff: this.#lastHandoff ? journaled(this.#lastHandoff) : null,
    };
    this.#journal.write(record);
    crashPoint(`supervisor:journal-${phase}`);
  }
}

/** What of the state the journal keeps about versions: a change is written at once. */
function versionsKey(s: LifecycleState): string {
  return JSON.stringify([s.program, s.programGood, s.lastGood]);
}

/** A handoff result shortened for the journal: its texts bounded, a failed daemon's output left out. */
function journaled(result: HandoffResult): Record<string, unknown> {
  const short = (text: string | null): string | null => (text === null || text.length <= 2_048 ? text : `${text.slice(0, 2_048)}…`);
  return { ...result, abortReason: result.abortReason ? { code: result.abortReason.code, reason: short(result.abortReason.reason) } : null, aftermath: short(result.aftermath), successorOutput: null };
}

/** A handoff result as this supervisor journals it (a record from elsewhere is not shown as one). */
function isHandoffResult(v: unknown): v is HandoffResult {
  const r = v as Partial<HandoffResult> | null | undefined;
  return typeof r?.handoffId === 'string' && typeof r.committed === 'boolean' && typeof r.outcome === 'string' && typeof r.timings?.totalMs === 'number' && typeof r.timings.phases === 'object';
}
