/**
 * The supervisor: holds the listeners, cold-starts the daemon, drives handoffs with the
 * supervisor state machine of `@handoff/protocol`, journals every irreversible step, restarts
 * a daemon that dies outside a handoff, and after its own crash converges from the journal.
 *
 * Phase events are published on `node:diagnostics_channel` as `handoff:supervisor:phase`
 * and `handoff:supervisor:event`.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { channel as diagnosticsChannel } from 'node:diagnostics_channel';
import { Channel, DataDirLock, MachineDriver, crashPoint } from '@handoff/core';
import { DEFAULT_TIMEOUTS, assertNever, capabilities as capabilityBits, initialSupervisorState, supervisorTransition } from '@handoff/protocol';
import type { AbortCode, HandoffOutcome, JournalPhase, JournalRecord, OutcomeKind, SealReport, SupervisorEffect, SupervisorEvent, SupervisorPhase, SupervisorState, SupervisorTimer, Timeouts } from '@handoff/protocol';
import { SupervisorError, SupervisorErrorCode } from './errors.js';
import { JournalFile } from './journal-file.js';
import type { HeldListener } from './listeners.js';
import { isAlive, processStartTime, spawnDaemon, stopProcess, waitForDeath } from './processes.js';
import type { DaemonCommand, SpawnedDaemon } from './processes.js';
import { openIncumbentSession } from './session.js';
import type { IncumbentSession } from './session.js';

/** Options of {@link Supervisor}. */
export interface SupervisorOptions {
  readonly listeners: readonly HeldListener[];
  readonly daemon: DaemonCommand;
  readonly controlSocket: string;
  /** The daemon's data directory, whose lock recovery checks. */
  readonly dataDir: string;
  /** The journal file. */
  readonly journal: string;
  readonly timeouts?: Partial<Timeouts>;
  /** Reserve copies of each listener given to a daemon. Default 2. */
  readonly reserveCopies?: number;
  /** What to do when the daemon dies outside a handoff. */
  readonly restart?: RestartPolicy;
  /** How long a started daemon has to answer on its control socket. Default 15 s. */
  readonly startTimeoutMs?: number;
}

/**
 * Restarts after an unexpected daemon death: delays double with each failure in the window
 * (from `initialDelayMs` up to `maxDelayMs`); more than `maxFailures` in `windowMs` is a crash
 * loop, and the supervisor gives up (lifecycle `failed`). `policy: 'never'` gives up at once.
 */
export interface RestartPolicy {
  readonly policy?: 'on-failure' | 'never';
  readonly initialDelayMs?: number;
  readonly maxDelayMs?: number;
  readonly maxFailures?: number;
  readonly windowMs?: number;
}

/** What {@link Supervisor.performHandoff} may change for this handoff. */
export interface HandoffRequest {
  /** Replaces parts of the daemon command, e.g. the new program's path. */
  readonly daemon?: Partial<DaemonCommand>;
}

/** The result of a handoff. */
export interface HandoffResult {
  readonly handoffId: string;
  readonly committed: boolean;
  readonly outcome: OutcomeKind;
  readonly abortReason: { readonly code: AbortCode; readonly reason: string } | null;
  /** Milliseconds per supervisor phase, and in total. */
  readonly timings: { readonly totalMs: number; readonly phases: Readonly<Partial<Record<SupervisorPhase, number>>> };
  /** The pid serving after the handoff (null if none could be confirmed). */
  readonly incumbentPid: number | null;
}

/** Lifecycle of a {@link Supervisor}. */
export type SupervisorLifecycle = 'created' | 'starting' | 'serving' | 'handingOff' | 'restarting' | 'failed' | 'stopping' | 'stopped';

/** A serving daemon, child or adopted. */
interface IncumbentRef {
  readonly pid: number;
  readonly startTime: string | null;
  readonly buildId: string;
  readonly child: ChildProcess | null;
  readonly exited: Promise<unknown> | null;
  session: IncumbentSession | null;
  readonly generation: number;
  readonly since: number;
  /** Replaced by a committed successor: its exit is expected. */
  retired: boolean;
}

/** What the supervisor reports about itself. */
export interface SupervisorStatus {
  readonly lifecycle: SupervisorLifecycle;
  readonly pid: number;
  readonly incumbent: { readonly pid: number; readonly buildId: string; readonly generation: number; readonly uptimeMs: number; readonly adopted: boolean } | null;
  readonly handoff: { readonly handoffId: string; readonly phase: SupervisorPhase } | null;
  readonly lastHandoff: HandoffResult | null;
  readonly restarts: number;
  /** Why the supervisor gave up (lifecycle `failed`), or null. */
  readonly failure: string | null;
}

const phaseChannel = diagnosticsChannel('handoff:supervisor:phase');
const eventChannel = diagnosticsChannel('handoff:supervisor:event');
const SUPERVISOR_CAPABILITIES = capabilityBits('SealProgress', 'RecoverFromDisk', 'ReserveListeners', 'CommitToSuccessor');

function publish(name: string, data: Record<string, unknown>): void {
  if (eventChannel.hasSubscribers) eventChannel.publish({ event: name, at: Date.now(), ...data });
}

/** The supervisor. */
export class Supervisor {
  readonly #options: SupervisorOptions;
  readonly #timeouts: Timeouts;
  readonly #journal: JournalFile;
  #lifecycle: SupervisorLifecycle = 'created';
  #incumbent: IncumbentRef | null = null;
  #generation = 0;
  #run: HandoffRun | null = null;
  #lastHandoff: HandoffResult | null = null;
  #restarts = 0;
  /** Times of recent unexpected deaths, for the crash-loop window. */
  #failures: number[] = [];
  #failure: string | null = null;
  #restartTimer: NodeJS.Timeout | undefined;

  constructor(options: SupervisorOptions) {
    if (options.listeners.length === 0) throw new SupervisorError(SupervisorErrorCode.InvalidArgument, 'a supervisor needs at least one listener');
    this.#options = options;
    this.#timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.#journal = new JournalFile(options.journal);
  }

  get lifecycle(): SupervisorLifecycle {
    return this.#lifecycle;
  }

  get timeouts(): Timeouts {
    return this.#timeouts;
  }

  /** Status for operators. A running handoff does not block it. */
  status(): SupervisorStatus {
    const inc = this.#incumbent;
    return {
      lifecycle: this.#lifecycle,
      pid: process.pid,
      incumbent: inc ? { pid: inc.pid, buildId: inc.buildId, generation: inc.generation, uptimeMs: Date.now() - inc.since, adopted: inc.child === null } : null,
      handoff: this.#run ? { handoffId: this.#run.handoffId, phase: this.#run.phase } : null,
      lastHandoff: this.#lastHandoff,
      restarts: this.#restarts,
      failure: this.#failure,
    };
  }

  /**
   * Converges from the journal (adopting a live incumbent, stopping orphans), or cold-starts.
   * @throws SupervisorError when the daemon cannot be started.
   */
  async start(): Promise<void> {
    if (this.#lifecycle !== 'created') throw new SupervisorError(SupervisorErrorCode.WrongState, `start() in lifecycle ${this.#lifecycle}`);
    this.#lifecycle = 'starting';
    await this.resumeFromJournal();
    this.#lifecycle = 'serving';
  }

  /**
   * Reads the journal and converges: waits (bounded) for the daemon that holds the lock to
   * answer on the control socket and adopts it; stops every other daemon the journal names;
   * cold-starts when none answers. Recovery never trusts the journal alone.
   */
  async resumeFromJournal(): Promise<{ readonly adopted: number | null; readonly stopped: readonly number[]; readonly coldStarted: boolean }> {
    const { record, damaged } = this.#journal.read();
    if (damaged) publish('journal-damaged', { reason: damaged });
    const known = [record?.incumbent, record?.successor].filter((p): p is NonNullable<typeof p> => p !== null && p !== undefined);
    const sameProcess = (p: { pid: number; startTime: string | null }): boolean => isAlive(p.pid) && (p.startTime === null || processStartTime(p.pid) === p.startTime);
    // Daemons resolve a dead supervisor on their own within the liveness timeout and the lock
    // retry. A live process holding the lock (e.g. a daemon still starting when the previous
    // supervisor died) is given up to the start timeout to answer: never start a second one.
    const started = Date.now();
    const deadline = started + (record && record.phase !== 'idle' ? this.#timeouts.livenessMs + 6_000 : 2_000);
    const holderDeadline = started + (this.#options.startTimeoutMs ?? 15_000);
    let adopted: IncumbentSession | null;
    for (;;) {
      adopted = await this.#connectToLockHolder(1_000);
      if (adopted) break;
      const lock = DataDirLock.probe(this.#options.dataDir);
      const anyAlive = known.some(sameProcess);
      if (!lock.held && !anyAlive) break;
      const now = Date.now();
      if (now >= deadline && !(lock.held && lock.pidAlive && now < holderDeadline)) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const stopped: number[] = [];
    for (const p of known) {
      if (p.pid === adopted?.hello.pid || !sameProcess(p)) continue;
      await stopProcess(p.pid, this.#timeouts.stopGraceMs);
      stopped.push(p.pid);
    }
    publish('recovered', { journalPhase: record?.phase ?? null, adopted: adopted?.hello.pid ?? null, stopped });
    if (adopted) {
      this.#setIncumbent({ pid: adopted.hello.pid, startTime: processStartTime(adopted.hello.pid), buildId: adopted.hello.buildId, child: null, exited: null, session: adopted });
      this.#writeJournal('idle', null, null, null);
      return { adopted: adopted.hello.pid, stopped, coldStarted: false };
    }
    this.#writeJournal('idle', null, null, null);
    await this.#coldStart();
    return { adopted: null, stopped, coldStarted: true };
  }

  /**
   * Replaces the daemon's program. One at a time.
   * @throws SupervisorError HANDOFF_IN_PROGRESS while another runs; HANDOFF_NO_INCUMBENT when nothing serves.
   */
  async performHandoff(request: HandoffRequest = {}): Promise<HandoffResult> {
    if (this.#run) {
      throw new SupervisorError(SupervisorErrorCode.InProgress, `handoff ${this.#run.handoffId} is in progress (phase ${this.#run.phase}); wait for its outcome before starting another`);
    }
    const incumbent = this.#incumbent;
    if (!incumbent?.session || incumbent.session.channel.closed || this.#lifecycle !== 'serving') {
      const why = this.#failure ? `the supervisor gave up: ${this.#failure}` : `supervisor ${this.#lifecycle}; wait for the daemon to start`;
      throw new SupervisorError(SupervisorErrorCode.NoIncumbent, `no incumbent is serving (${why})`);
    }
    const command: DaemonCommand = { ...this.#options.daemon, ...request.daemon };
    const run = new HandoffRun(this.#runContext(), incumbent, command, (child) => { this.#track(child); });
    this.#run = run;
    this.#lifecycle = 'handingOff';
    let result: HandoffResult;
    try {
      result = await run.execute();
      if (result.committed) incumbent.retired = true;
      // Still "running" until the aftermath is settled, so that the replaced incumbent's
      // exit is not taken for a crash.
      result = { ...result, incumbentPid: await this.#afterHandoff(run, result) };
    } finally {
      this.#run = null;
    }
    this.#lastHandoff = result;
    this.#settleAfterHandoff();
    return result;
  }

  /** Back to `serving` after a handoff, or to restarting when nothing serves. (A method: the lifecycle changes across awaits.) */
  #settleAfterHandoff(): void {
    if (this.#lifecycle !== 'handingOff') return;
    this.#lifecycle = 'serving';
    if (this.#incumbent === null) this.#scheduleRestart('no daemon serves after the handoff');
  }

  /**
   * Kills, with SIGKILL, every daemon this supervisor started or adopted: the last resort
   * when a graceful stop takes too long (acknowledged writes are durable; in-flight ones fail).
   */
  kill(): void {
    const pids = new Set([...this.#children].map((c) => c.pid).filter((p): p is number => p !== undefined));
    if (this.#stopping) pids.add(this.#stopping.pid);
    if (this.#incumbent) pids.add(this.#incumbent.pid);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }

  /** The incumbent being stopped by {@link stop}, so that {@link kill} can still reach it. */
  #stopping: IncumbentRef | null = null;

  /** Stops the daemon (SIGTERM: it drains and seals; SIGKILL after `graceMs`) and lets go of it. */
  async stop(graceMs = 30_000): Promise<void> {
    this.#lifecycle = 'stopping';
    clearTimeout(this.#restartTimer);
    const inc = this.#incumbent;
    this.#incumbent = null;
    this.#stopping = inc;
    if (inc) {
      inc.session?.channel.close('supervisor stopping');
      await stopProcess(inc.pid, graceMs, inc.exited ?? undefined);
    }
    // No orphan: every child this supervisor started is gone when it stops.
    const exits = [...this.#children].map(async (c) => {
      if (c.pid !== undefined) await stopProcess(c.pid, Math.min(graceMs, this.#timeouts.stopGraceMs), new Promise((r) => c.once('exit', r)));
    });
    await Promise.all(exits);
    this.#writeJournal('idle', null, null, null);
    this.#lifecycle = 'stopped';
  }

  /** Every child started, until it exits. */
  readonly #children = new Set<ChildProcess>();

  #track(child: ChildProcess): void {
    if (child.exitCode !== null || child.signalCode !== null) return;
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
  }

  /** What every spawned daemon gets besides its role. */
  #spawnOptions(): Omit<Parameters<typeof spawnDaemon>[1], 'role'> {
    return {
      listeners: this.#options.listeners,
      reserveCopies: this.#options.reserveCopies ?? 2,
      controlSocket: this.#options.controlSocket,
      timing: { heartbeatMs: this.#timeouts.heartbeatMs, livenessMs: this.#timeouts.livenessMs },
    };
  }

  #runContext(): RunContext {
    return {
      timeouts: this.#timeouts,
      options: this.#options,
      spawnOptions: this.#spawnOptions(),
      writeJournal: (phase, handoffId, successor, seal) => {
        this.#writeJournal(phase, handoffId, successor, seal);
      },
    };
  }

  #writeJournal(phase: JournalPhase, handoffId: string | null, successor: { pid: number; startTime: string | null } | null, seal: SealReport | null): void {
    const inc = this.#incumbent;
    const record: JournalRecord = {
      v: 1,
      phase,
      handoffId,
      writtenAt: Date.now(),
      supervisorPid: process.pid,
      incumbent: inc ? { pid: inc.pid, startTime: inc.startTime } : null,
      successor,
      seal,
    };
    this.#journal.write(record);
    crashPoint(`supervisor:journal-${phase}`);
  }

  /** Connects to whoever answers on the control socket, keeping the session only if it holds the lock. */
  async #connectToLockHolder(timeoutMs: number, expectPid?: number): Promise<IncumbentSession | null> {
    const session = await openIncumbentSession(this.#options.controlSocket, {
      timeoutMs,
      capabilities: SUPERVISOR_CAPABILITIES,
      onRefused: (reason) => {
        publish('session-refused', { reason });
      },
    });
    if (!session) return null;
    const lock = DataDirLock.probe(this.#options.dataDir);
    const holds = lock.held && lock.pid === session.hello.pid;
    if (!holds || (expectPid !== undefined && session.hello.pid !== expectPid)) {
      publish('session-refused', { reason: `pid ${session.hello.pid} answered; the lock is ${lock.held ? `held by ${String(lock.pid)}` : 'free'}; expected ${String(expectPid ?? 'the lock holder')}` });
      session.channel.close('not the lock holder');
      return null;
    }
    return session;
  }

  /** Waits until `pid` answers on the control socket as the lock holder. */
  async #awaitSession(pid: number, isGone: () => boolean): Promise<IncumbentSession | null> {
    const deadline = Date.now() + (this.#options.startTimeoutMs ?? 15_000);
    while (Date.now() < deadline && !isGone()) {
      const session = await this.#connectToLockHolder(1_000, pid);
      if (session) return session;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return null;
  }

  async #coldStart(): Promise<void> {
    const spawned = spawnDaemon(this.#options.daemon, { role: 'cold', ...this.#spawnOptions() });
    const pid = spawned.child.pid;
    this.#track(spawned.child);
    if (pid === undefined) {
      const error = await new Promise<Error>((resolve) => spawned.child.once('error', resolve));
      throw new SupervisorError(SupervisorErrorCode.Spawn, `cannot start the daemon ${this.#options.daemon.command}: ${error.message}`, { cause: error });
    }
    const exit = { gone: false };
    void spawned.exited.then(() => {
      exit.gone = true;
    });
    publish('cold-start', { pid });
    crashPoint('supervisor:cold-started');
    const session = await this.#awaitSession(pid, () => exit.gone);
    if (!session) {
      await stopProcess(pid, this.#timeouts.stopGraceMs, spawned.exited);
      throw new SupervisorError(SupervisorErrorCode.Spawn, `the daemon (pid ${pid}) ${exit.gone ? 'exited' : 'did not answer on its control socket'} during start-up; see its output`);
    }
    this.#setIncumbent({ pid, startTime: processStartTime(pid), buildId: session.hello.buildId, child: spawned.child, exited: spawned.exited, session });
  }

  #setIncumbent(ref: Omit<IncumbentRef, 'generation' | 'since' | 'retired'>): void {
    const inc: IncumbentRef = { ...ref, generation: ++this.#generation, since: Date.now(), retired: false };
    this.#incumbent = inc;
    this.#watchSession(inc);
    if (inc.exited) {
      void inc.exited.then(() => {
        this.#incumbentGone(inc);
      });
    }
  }

  /** Outside a handoff: a closed session means a dead daemon (restart) or one to reconnect to. */
  #watchSession(inc: IncumbentRef): void {
    const session = inc.session;
    if (!session) return;
    session.channel.on('close', (reason) => {
      publish('session-closed', { pid: inc.pid, reason });
      if (this.#incumbent !== inc || inc.session !== session || this.#run) return;
      inc.session = null;
      void (async () => {
        if (await waitForDeath(inc.pid, 300)) {
          this.#incumbentGone(inc);
          return;
        }
        inc.session = await this.#awaitSession(inc.pid, () => !isAlive(inc.pid));
        if (inc.session) this.#watchSession(inc);
        else this.#incumbentGone(inc);
      })();
    });
  }

  #incumbentGone(inc: IncumbentRef): void {
    if (inc.retired || this.#incumbent !== inc || this.#run || this.#lifecycle === 'stopping' || this.#lifecycle === 'stopped') return;
    this.#incumbent = null;
    this.#scheduleRestart(`the daemon (pid ${inc.pid}) died`);
  }

  /** Cold-starts the daemon after a delay that doubles with each failure in the window; gives up on a crash loop. */
  #scheduleRestart(reason: string): void {
    const r = this.#options.restart ?? {};
    const now = Date.now();
    this.#failures = [...this.#failures.filter((t) => now - t < (r.windowMs ?? 60_000)), now];
    const maxFailures = r.maxFailures ?? 5;
    if (r.policy === 'never' || this.#failures.length > maxFailures) {
      this.#lifecycle = 'failed';
      this.#failure =
        r.policy === 'never'
          ? `${reason}; the restart policy is "never"`
          : `${reason}; ${this.#failures.length} failures within ${r.windowMs ?? 60_000} ms is a crash loop (limit ${maxFailures}); fix the daemon and restart the supervisor`;
      publish('gave-up', { reason: this.#failure });
      return;
    }
    this.#lifecycle = 'restarting';
    this.#restarts += 1;
    const delay = Math.min((r.initialDelayMs ?? 100) * 2 ** (this.#failures.length - 1), r.maxDelayMs ?? 5_000);
    publish('restart', { reason, delayMs: delay, failuresInWindow: this.#failures.length });
    this.#restartTimer = setTimeout(() => {
      if (this.#lifecycle !== 'restarting') return;
      this.#coldStart().then(
        () => {
          this.#lifecycle = 'serving';
        },
        (error: unknown) => {
          this.#scheduleRestart(`restart failed: ${(error as Error).message}`);
        },
      );
    }, delay);
  }

  /** After a handoff: make the serving daemon the incumbent and make sure a session is open. */
  async #afterHandoff(run: HandoffRun, result: HandoffResult): Promise<number | null> {
    const old = this.#incumbent;
    if (result.committed && run.successor?.child.pid !== undefined) {
      const successor = run.successor;
      const pid = successor.child.pid as number;
      let gone = false;
      void successor.exited.then(() => {
        gone = true;
      });
      const session = await this.#awaitSession(pid, () => gone);
      this.#setIncumbent({ pid, startTime: processStartTime(pid), buildId: session?.hello.buildId ?? 'unknown', child: successor.child, exited: successor.exited, session });
      if (!session) this.#incumbentGone(this.#incumbent as IncumbentRef);
      return session ? pid : null;
    }
    if (result.outcome === 'coldStart') {
      this.#incumbent = null;
      try {
        await this.#coldStart();
      } catch (error) {
        this.#scheduleRestart(`cold start after the handoff failed: ${(error as Error).message}`);
        return null;
      }
      return (this.#incumbent as IncumbentRef | null)?.pid ?? null;
    }
    // Rolled back: the incumbent serves on; reopen its session if it ended (the session
    // it kept is still watched).
    if (!old) return null;
    if (!old.session || old.session.channel.closed) {
      old.session = await this.#awaitSession(old.pid, () => !isAlive(old.pid));
      if (!old.session) {
        this.#incumbentGone(old);
        return null;
      }
      this.#watchSession(old);
    }
    return old.pid;
  }
}

/** What a handoff run needs from its supervisor. */
interface RunContext {
  readonly timeouts: Timeouts;
  readonly options: SupervisorOptions;
  readonly spawnOptions: Omit<Parameters<typeof spawnDaemon>[1], 'role'>;
  writeJournal(phase: JournalPhase, handoffId: string | null, successor: { pid: number; startTime: string | null } | null, seal: SealReport | null): void;
}

/** One handoff: the supervisor machine and its I/O. */
class HandoffRun {
  readonly handoffId = `h-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  readonly #ctx: RunContext;
  readonly #incumbent: IncumbentRef;
  readonly #command: DaemonCommand;
  readonly #machine: MachineDriver<SupervisorState, SupervisorEvent, SupervisorEffect, SupervisorTimer>;
  successor: SpawnedDaemon | null = null;
  #successorChannel: Channel<'toDaemon'> | null = null;
  readonly #started = Date.now();
  #phaseStarted = Date.now();
  readonly #phases: Partial<Record<SupervisorPhase, number>> = {};
  #resolve!: (outcome: HandoffOutcome) => void;
  #detach: (() => void)[] = [];

  readonly #track: (child: ChildProcess) => void;

  constructor(ctx: RunContext, incumbent: IncumbentRef, command: DaemonCommand, track: (child: ChildProcess) => void) {
    this.#ctx = ctx;
    this.#incumbent = incumbent;
    this.#command = command;
    this.#track = track;
    this.#machine = new MachineDriver({
      initial: initialSupervisorState(),
      transition: supervisorTransition,
      onEffect: (effect) => {
        this.#run(effect);
      },
      onStep: ({ before, after, violation }) => {
        if (violation) publish('violation', { handoffId: this.handoffId, error: violation.message });
        if (after.phase === before.phase) return;
        const now = Date.now();
        this.#phases[before.phase] = (this.#phases[before.phase] ?? 0) + (now - this.#phaseStarted);
        this.#phaseStarted = now;
        if (phaseChannel.hasSubscribers) phaseChannel.publish({ handoffId: this.handoffId, from: before.phase, to: after.phase, at: now });
      },
    });
  }

  get phase(): SupervisorPhase {
    return this.#machine.state.phase;
  }

  async execute(): Promise<HandoffResult> {
    const finished = new Promise<HandoffOutcome>((resolve) => {
      this.#resolve = resolve;
    });
    this.#attachIncumbent();
    this.#feed({ type: 'start', spec: { handoffId: this.handoffId, timeouts: this.#ctx.timeouts, capabilities: SUPERVISOR_CAPABILITIES } });
    const outcome = await finished;
    for (const detach of this.#detach) detach();
    this.#machine.stopTimers();
    return {
      handoffId: this.handoffId,
      committed: outcome.committed,
      outcome: outcome.kind,
      abortReason: outcome.code ? { code: outcome.code, reason: outcome.reason ?? '' } : null,
      timings: { totalMs: Date.now() - this.#started, phases: this.#phases },
      incumbentPid: null,
    };
  }

  #attachIncumbent(): void {
    const inc = this.#incumbent;
    const session = inc.session;
    if (session) {
      const onMessage = (message: Parameters<Parameters<typeof session.channel.on<'message'>>[1]>[0]): void => {
        crashPoint(`supervisor:received-${message.type}-from-incumbent`);
        this.#feed({ type: 'incumbentMessage', message });
      };
      const onClose = (reason: string): void => {
        void (async () => {
          const dead = inc.exited ? await Promise.race([inc.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => { r(false); }, 300))]) : await waitForDeath(inc.pid, 300);
          this.#feed(dead || !isAlive(inc.pid) ? { type: 'incumbentExited', reason } : { type: 'incumbentDisconnected', reason });
        })();
      };
      session.channel.on('message', onMessage);
      session.channel.on('close', onClose);
      this.#detach.push(() => {
        session.channel.off('message', onMessage);
        session.channel.off('close', onClose);
      });
    }
    if (inc.exited) {
      let live = true;
      void inc.exited.then(() => {
        if (live) this.#feed({ type: 'incumbentExited', reason: 'the incumbent process exited' });
      });
      this.#detach.push(() => {
        live = false;
      });
    }
  }

  #feed(event: SupervisorEvent): void {
    this.#machine.feed(event);
  }

  #successorRecord(): { pid: number; startTime: string | null } | null {
    const pid = this.successor?.child.pid;
    return pid === undefined ? null : { pid, startTime: processStartTime(pid) };
  }

  #run(effect: Exclude<SupervisorEffect, { type: 'setTimer' | 'cancelTimer' }>): void {
    switch (effect.type) {
      case 'journal':
        this.#ctx.writeJournal(effect.phase, effect.phase === 'idle' ? null : this.handoffId, effect.phase === 'idle' ? null : this.#successorRecord(), effect.seal);
        return;
      case 'spawnSuccessor':
        this.#spawn();
        return;
      case 'sendToSuccessor':
        this.#successorChannel?.send(effect.message);
        crashPoint(`supervisor:sent-${effect.message.type}-to-successor`);
        return;
      case 'sendToIncumbent':
        this.#incumbent.session?.channel.send(effect.message);
        crashPoint(`supervisor:sent-${effect.message.type}-to-incumbent`);
        return;
      case 'stopSuccessor': {
        const s = this.successor;
        if (s?.child.pid !== undefined) void stopProcess(s.child.pid, effect.graceMs, s.exited);
        return;
      }
      case 'coldStart':
        publish('cold-start-needed', { handoffId: this.handoffId, reason: effect.reason });
        return;
      case 'sealProgress':
        publish('seal-progress', { handoffId: this.handoffId, completed: effect.completed, total: effect.total });
        return;
      case 'finished':
        this.#resolve(effect.outcome);
        return;
      default:
        assertNever(effect, 'effect');
    }
  }

  #spawn(): void {
    const spawned = spawnDaemon(this.#command, { role: 'successor', ...this.#ctx.spawnOptions });
    this.successor = spawned;
    this.#track(spawned.child);
    const pid = spawned.child.pid;
    if (pid === undefined || !spawned.channel) {
      spawned.child.once('error', (error) => {
        this.#feed({ type: 'spawnFailed', error: `${this.#command.command}: ${error.message}` });
      });
      return;
    }
    const channel = new Channel(spawned.channel, 'toDaemon');
    this.#successorChannel = channel;
    channel.on('message', (message) => {
      crashPoint(`supervisor:received-${message.type}-from-successor`);
      this.#feed({ type: 'successorMessage', message });
    });
    void spawned.exited.then(({ code, signal }) => {
      channel.close('successor exited');
      this.#feed({ type: 'successorGone', reason: signal ? `killed by ${signal}` : `exit code ${String(code)}` });
    });
    this.#feed({ type: 'spawned', pid });
    crashPoint('supervisor:spawned');
  }
}
