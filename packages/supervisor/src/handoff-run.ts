/**
 * One handoff: the handoff machine of `@handoff/protocol` and its I/O — spawning the
 * successor, its channel, the incumbent's control session, the journal before every
 * irreversible step. It decides the outcome; what happens to the daemons after it (who
 * serves, restarts) is the lifecycle's business.
 */
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { Channel, crashPoint } from '@handoff/core/internal';
import { initialSupervisorState, supervisorTransition } from '@handoff/protocol';
import type { AbortCode, DaemonProgram, HandoffOutcome, JournalPhase, OutcomeKind, SealReport, SupervisorEffect, SupervisorEvent, SupervisorPhase, SupervisorState, SupervisorTimer, Timeouts } from '@handoff/protocol';
import { MachineDriver, assertNever, messageOf } from '@handoff/protocol/internal';
import { publish } from './channels.js';
import { describeExit, processStartTime, readFailureFile, spawnDaemon, stopProcess, waitForDeath } from './processes.js';
import type { SpawnOptions, SpawnedDaemon } from './processes.js';
import type { IncumbentSession } from './session.js';

/** A phase change of a handoff, as {@link HandoffOptions.onPhase} reports it. */
export interface PhaseChange {
  readonly handoffId: string;
  readonly from: SupervisorPhase;
  readonly to: SupervisorPhase;
  /** Time spent in `from`. */
  readonly phaseMs: number;
  /** Time since the handoff started. */
  readonly elapsedMs: number;
}

/** The result of a handoff. */
export interface HandoffResult {
  readonly handoffId: string;
  readonly committed: boolean;
  readonly outcome: OutcomeKind;
  readonly abortReason: { readonly code: AbortCode; readonly reason: string } | null;
  /** Milliseconds per handoff phase, and in total. */
  readonly timings: { readonly totalMs: number; readonly phases: Readonly<Partial<Record<SupervisorPhase, number>>> };
  /** The pid serving once the handoff settled: the new daemon once it answered, or the old one after a rollback; null when none serves (a restart is under way). */
  readonly incumbentPid: number | null;
  /** What happened after the outcome was decided, when it matters (e.g. the new daemon died right after the commit point); else null. */
  readonly aftermath: string | null;
  /** The last lines of output of a new daemon that exited before it served, when it wrote them (`HANDOFF_FAILURE_FILE`); else null. */
  readonly successorOutput: string | null;
  /** The new daemon's pid, once spawned (its probation, after a commit, is this pid's). */
  readonly successorPid: number | null;
}

/** The serving daemon a handoff replaces. */
export interface RunIncumbent {
  readonly pid: number;
  readonly session: IncumbentSession;
  /** Resolves when it exits, if it is a child of this supervisor; null for an adopted daemon. */
  readonly exited: Promise<unknown> | null;
}

/** What a handoff run needs from the lifecycle. */
export interface RunContext {
  readonly timeouts: Timeouts;
  readonly capabilities: number;
  readonly spawnOptions: Omit<SpawnOptions, 'role'>;
  writeJournal(phase: JournalPhase, handoffId: string | null, successor: { pid: number; startTime: string | null } | null, seal: SealReport | null): void;
  /** The successor exists (so its death is watched from now on). */
  onSpawned(spawned: SpawnedDaemon): void;
  onPhase?: ((change: PhaseChange) => void) | undefined;
}

/** One handoff. */
export class HandoffRun {
  readonly handoffId = `h-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  readonly #ctx: RunContext;
  readonly #incumbent: RunIncumbent;
  readonly #program: DaemonProgram;
  readonly #machine: MachineDriver<SupervisorState, SupervisorEvent, SupervisorEffect, SupervisorTimer>;
  #successor: SpawnedDaemon | null = null;
  #successorExited = false;
  #successorChannel: Channel<'toDaemon'> | null = null;
  readonly #started = Date.now();
  #phaseStarted = Date.now();
  readonly #phases: Partial<Record<SupervisorPhase, number>> = {};
  #resolve!: (outcome: HandoffOutcome) => void;
  readonly #detach: (() => void)[] = [];

  constructor(ctx: RunContext, incumbent: RunIncumbent, program: DaemonProgram) {
    this.#ctx = ctx;
    this.#incumbent = incumbent;
    this.#program = program;
    this.#machine = new MachineDriver({
      initial: initialSupervisorState(),
      transition: supervisorTransition,
      onEffect: (effect) => {
        this.#run(effect);
      },
      onStep: ({ before, after, violation }) => {
        if (violation) publish('violation', { machine: 'handoff', error: violation.message });
        if (after.phase === before.phase) return;
        const now = Date.now();
        const phaseMs = now - this.#phaseStarted;
        this.#phases[before.phase] = (this.#phases[before.phase] ?? 0) + phaseMs;
        this.#phaseStarted = now;
        const change: PhaseChange = { handoffId: this.handoffId, from: before.phase, to: after.phase, phaseMs, elapsedMs: now - this.#started };
        publish('phase', { handoffId: change.handoffId, from: change.from, to: change.to, phaseMs });
        try {
          this.#ctx.onPhase?.(change);
        } catch {
          // An observer's mistake never changes the handoff.
        }
      },
    });
  }

  get phase(): SupervisorPhase {
    return this.#machine.state.phase;
  }

  /** Runs the handoff to its outcome. `incumbentPid` and `aftermath` are left for the lifecycle to fill in. */
  async execute(): Promise<HandoffResult> {
    const finished = new Promise<HandoffOutcome>((resolve) => {
      this.#resolve = resolve;
    });
    this.#attachIncumbent();
    this.#machine.feed({ type: 'start', spec: { handoffId: this.handoffId, timeouts: this.#ctx.timeouts, capabilities: this.#ctx.capabilities } });
    const outcome = await finished;
    for (const detach of this.#detach) detach();
    this.#machine.stopTimers();
    const result: HandoffResult = {
      handoffId: this.handoffId,
      committed: outcome.committed,
      outcome: outcome.kind,
      abortReason: outcome.code ? { code: outcome.code, reason: outcome.reason ?? '' } : null,
      timings: { totalMs: Date.now() - this.#started, phases: this.#phases },
      incumbentPid: null,
      aftermath: null,
      // A successor that exited on its own before the outcome may have said why.
      successorOutput: !outcome.committed && this.#successorExited ? readFailureFile(this.#failureFile) : null,
      successorPid: this.#successor?.pid ?? null,
    };
    // Whatever it writes as it exits later (stopped after a rollback) is not news: remove it.
    void this.#successor?.exited.then(() => readFailureFile(this.#failureFile));
    publish('handoff', { handoffId: this.handoffId, outcome: outcome.kind, code: outcome.code, reason: outcome.reason, totalMs: result.timings.totalMs });
    return result;
  }

  #attachIncumbent(): void {
    const inc = this.#incumbent;
    const { channel } = inc.session;
    const onMessage = (message: Parameters<Parameters<typeof channel.on<'message'>>[1]>[0]): void => {
      crashPoint(`supervisor:received-${message.type}-from-incumbent`);
      this.#machine.feed({ type: 'incumbentMessage', message });
    };
    const onClose = (reason: string): void => {
      // A session that ends because its process died is told apart from one that just ended.
      void waitForDeath(inc.pid, 300).then((dead) => {
        this.#machine.feed(dead ? { type: 'incumbentExited', reason } : { type: 'incumbentDisconnected', reason });
      });
    };
    channel.on('message', onMessage);
    channel.on('close', onClose);
    this.#detach.push(() => {
      channel.off('message', onMessage);
      channel.off('close', onClose);
    });
    if (inc.exited) {
      let live = true;
      void inc.exited.then(() => {
        if (live) this.#machine.feed({ type: 'incumbentExited', reason: 'the incumbent process exited' });
      });
      this.#detach.push(() => {
        live = false;
      });
    }
  }

  #successorRecord(): { pid: number; startTime: string | null } | null {
    const pid = this.#successor?.pid;
    return pid === undefined ? null : { pid, startTime: processStartTime(pid) };
  }

  #run(effect: Exclude<SupervisorEffect, { type: 'setTimer' | 'cancelTimer' }>): void {
    switch (effect.type) {
      case 'journal':
        try {
          this.#ctx.writeJournal(effect.phase, effect.phase === 'idle' ? null : this.handoffId, effect.phase === 'idle' ? null : this.#successorRecord(), effect.seal);
        } catch (error) {
          // The next step must not be taken unrecorded: abandon the handoff (once aborting,
          // a cancel is ignored, and the rollback goes on).
          publish('journalError', { reason: messageOf(error) });
          this.#machine.feed({ type: 'cancel', reason: `the journal could not be written: ${messageOf(error)}` });
        }
        return;
      case 'spawnSuccessor':
        this.#spawn();
        return;
      case 'sendToSuccessor':
        this.#successorChannel?.send(effect.message);
        crashPoint(`supervisor:sent-${effect.message.type}-to-successor`);
        return;
      case 'sendToIncumbent':
        this.#incumbent.session.channel.send(effect.message);
        crashPoint(`supervisor:sent-${effect.message.type}-to-incumbent`);
        return;
      case 'stopSuccessor': {
        const s = this.#successor;
        if (s) void stopProcess(s.pid, effect.graceMs, s.exited);
        return;
      }
      case 'coldStart':
        // The lifecycle starts the daemon afresh once the outcome (coldStart) is known.
        return;
      case 'sealProgress':
        publish('sealProgress', { handoffId: this.handoffId, completed: effect.completed, total: effect.total });
        return;
      case 'finished':
        this.#resolve(effect.outcome);
        return;
      default:
        assertNever(effect, 'effect');
    }
  }

  get #failureFile(): string {
    return join(dirname(this.#ctx.spawnOptions.controlSocket), `.failure-${this.handoffId}`);
  }

  #spawn(): void {
    let spawned: SpawnedDaemon;
    try {
      spawned = spawnDaemon(this.#program, { role: 'successor', ...this.#ctx.spawnOptions, failureFile: this.#failureFile });
    } catch (error) {
      this.#machine.feed({ type: 'spawnFailed', error: messageOf(error) });
      return;
    }
    this.#successor = spawned;
    this.#ctx.onSpawned(spawned);
    if (!spawned.channel) {
      void stopProcess(spawned.pid, 0, spawned.exited);
      this.#machine.feed({ type: 'spawnFailed', error: 'the successor has no channel to the supervisor' });
      return;
    }
    const channel = new Channel(spawned.channel, 'toDaemon');
    this.#successorChannel = channel;
    channel.on('message', (message) => {
      crashPoint(`supervisor:received-${message.type}-from-successor`);
      this.#machine.feed({ type: 'successorMessage', message });
    });
    void spawned.exited.then((exit) => {
      this.#successorExited = true;
      channel.close('successor exited');
      this.#machine.feed({ type: 'successorGone', reason: describeExit(exit) });
    });
    this.#machine.feed({ type: 'spawned', pid: spawned.pid });
    crashPoint('supervisor:spawned');
  }
}
