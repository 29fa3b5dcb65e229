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
import { AbortCode as AbortCodes, hasCapability } from '@handoff/protocol';
import { MachineDriver, assertNever, messageOf, readBeforeJudging } from '@handoff/protocol/internal';
import { publish } from './channels.js';
import type { DrainProgressInfo } from './channels.js';
import { describeExit, lowerPriority, mayRestorePriority, processCpu, processStartTime, readFailureFile, restorePriority, spawnDaemon, stopProcess, waitForDeath } from './processes.js';
import type { SpawnOptions, SpawnedDaemon } from './processes.js';
import type { DescriptorChannel } from './descriptors.js';
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
  /**
   * What the old daemon's drain left unfinished, when it drained (its Drained): client
   * connections it closed unfinished, tracked long-lived work it cut, and the idle connections
   * it offered to the successor (moved if the handoff committed); null when it did not drain.
   */
  readonly drained: { readonly openConnsRemaining: number; readonly workCut: number; readonly connsOffered: number } | null;
}

/** The serving daemon a handoff replaces. */
export interface RunIncumbent {
  readonly pid: number;
  readonly session: IncumbentSession;
  /** Resolves when it exits, if it is a child of this supervisor; null for an adopted daemon. */
  readonly exited: Promise<unknown> | null;
  /** Its descriptor channel, if it is a child spawned with one: its idle connections can move. */
  readonly descriptors?: DescriptorChannel | null;
}

/** What a handoff run needs from the lifecycle. */
export interface RunContext {
  readonly timeouts: Timeouts;
  readonly capabilities: number;
  /** Nice steps the successor runs lower until Begin; 0: as the incumbent. */
  readonly successorNice?: number;
  readonly spawnOptions: Omit<SpawnOptions, 'role'>;
  writeJournal(phase: JournalPhase, handoffId: string | null, successor: { pid: number; startTime: string | null } | null, seal: SealReport | null): void;
  /** The successor exists (so its death is watched from now on). */
  onSpawned(spawned: SpawnedDaemon): void;
  onPhase?: ((change: PhaseChange) => void) | undefined;
  /** Cut the incumbent's tracked long-lived work at once (PrepareHandoff's `cutWork`). */
  readonly cutWork?: boolean;
  /** What the draining incumbent still waits for, each time it says so. */
  onDrainProgress?: ((progress: DrainProgressInfo) => void) | undefined;
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
  /** The successor runs at a lower priority until Begin. */
  #successorLowered = false;
  #successorChannel: Channel<'toDaemon'> | null = null;
  readonly #started = Date.now();
  #phaseStarted = Date.now();
  readonly #phases: Partial<Record<SupervisorPhase, number>> = {};
  #resolve!: (outcome: HandoffOutcome) => void;
  readonly #detach: (() => void)[] = [];
  /** Per peer: when it last sent something or was last found working, and its CPU time then. */
  readonly #probe = new Map<'incumbent' | 'successor', { at: number; cpuMs: number | null }>();
  /** Per peer: how long it was found working on the CPU while sending nothing (its event loop blocked). */
  readonly #busyMs = new Map<'incumbent' | 'successor', number>();
  readonly #ownLoop = readBeforeJudging();
  #drain: (DrainProgressInfo & { readonly at: number }) | null = null;

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
      postpone: (timer, info) => this.#ownLoop(timer, info) ?? this.#stillWorking(timer),
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

  /** What the incumbent last said it waits for, while it drains (null otherwise, or before it said anything). */
  get drain(): (DrainProgressInfo & { readonly at: number }) | null {
    return this.#machine.state.phase === 'preparing' ? this.#drain : null;
  }

  #pidOf(peer: 'incumbent' | 'successor'): number | undefined {
    return peer === 'incumbent' ? this.#incumbent.pid : this.#successor?.pid;
  }

  /** A message from `peer`: it is alive; its CPU time from now on tells whether a later silence is work or death. */
  #heard(peer: 'incumbent' | 'successor'): void {
    const pid = this.#pidOf(peer);
    this.#probe.set(peer, { at: Date.now(), cpuMs: pid === undefined ? null : (processCpu(pid)?.cpuMs ?? null) });
  }

  /**
   * A silent peer that is running (or waiting for a CPU) when its liveness timeout expires, or
   * that used at least a quarter of a core since it was last heard of, is working with its
   * event loop blocked (a long synchronous open, replay or seal), not dead: its liveness
   * timeout is postponed (the phase deadline still bounds it) and the time is reported. A
   * process that sleeps without sending (hung), or is stopped, is dead as before.
   */
  #stillWorking(timer: SupervisorTimer): number | null {
    const peer = timer === 'successorLiveness' ? 'successor' : timer === 'incumbentLiveness' ? 'incumbent' : null;
    if (peer === null) return null;
    const pid = this.#pidOf(peer);
    const probe = this.#probe.get(peer);
    const cpu = pid === undefined ? null : processCpu(pid);
    if (pid === undefined || !probe || probe.cpuMs === null || cpu === null) return null;
    const { cpuMs } = cpu;
    const now = Date.now();
    const windowMs = now - probe.at;
    // On a loaded machine a working process may get little CPU, but it is runnable.
    if (windowMs <= 0 || (cpu.state !== 'R' && cpuMs - probe.cpuMs < windowMs / 4)) return null;
    this.#probe.set(peer, { at: now, cpuMs });
    const busy = (this.#busyMs.get(peer) ?? 0) + windowMs;
    this.#busyMs.set(peer, busy);
    publish('peerBusy', { handoffId: this.handoffId, peer, pid, silentMs: busy, cpuMs: cpuMs - probe.cpuMs });
    // Look again soon: a process that stops working (hangs) is then found dead quickly.
    return Math.max(100, Math.floor(this.#ctx.timeouts.livenessMs / 3));
  }

  /** What a failed handoff's reason adds when a peer was found working with its event loop blocked. */
  #busyNote(code: AbortCode | null): string {
    const silent: readonly (AbortCode | null)[] = [AbortCodes.SuccessorSilent, AbortCodes.IncumbentSilent, AbortCodes.PhaseTimeout, AbortCodes.TotalTimeout];
    if (!silent.includes(code)) return '';
    const notes = [...this.#busyMs].map(([peer, ms]) => `the ${peer} was busy on the CPU without sending anything for ${(ms / 1000).toFixed(1)} s`);
    return notes.length === 0 ? '' : ` (${notes.join('; ')}: its event loop was blocked by long synchronous work — open, preload, replay or seal; do long work in slices or off the thread that sends heartbeats, PROTOCOL.md section 9)`;
  }

  /** Runs the handoff to its outcome. `incumbentPid` and `aftermath` are left for the lifecycle to fill in. */
  async execute(): Promise<HandoffResult> {
    const finished = new Promise<HandoffOutcome>((resolve) => {
      this.#resolve = resolve;
    });
    this.#attachIncumbent();
    const inc = this.#incumbent;
    // Connections move only where both daemons agreed and descriptors can reach the successor from the incumbent.
    const moveConnections = hasCapability(inc.session.agreed, 'MoveConnections') && inc.descriptors?.open === true;
    this.#machine.feed({ type: 'start', spec: { handoffId: this.handoffId, timeouts: this.#ctx.timeouts, capabilities: this.#ctx.capabilities, cutWork: this.#ctx.cutWork ?? false, moveConnections } });
    const outcome = await finished;
    // Descriptors never forwarded are closed: their connections stay with the incumbent (which resumes them).
    inc.descriptors?.end();
    for (const detach of this.#detach) detach();
    this.#machine.stopTimers();
    const result: HandoffResult = {
      handoffId: this.handoffId,
      committed: outcome.committed,
      outcome: outcome.kind,
      abortReason: outcome.code ? { code: outcome.code, reason: `${outcome.reason ?? ''}${this.#busyNote(outcome.code)}` } : null,
      timings: { totalMs: Date.now() - this.#started, phases: this.#phases },
      incumbentPid: null,
      aftermath: null,
      // A successor that exited on its own before the outcome may have said why.
      successorOutput: !outcome.committed && this.#successorExited ? readFailureFile(this.#failureFile) : null,
      successorPid: this.#successor?.pid ?? null,
      drained: this.#machine.state.drained,
    };
    // Whatever it writes as it exits later (stopped after a rollback) is not news: remove it.
    void this.#successor?.exited.then(() => readFailureFile(this.#failureFile));
    publish('handoff', { handoffId: this.handoffId, outcome: outcome.kind, code: outcome.code, reason: outcome.reason, totalMs: result.timings.totalMs });
    return result;
  }

  #attachIncumbent(): void {
    const inc = this.#incumbent;
    const { channel } = inc.session;
    type Message = Parameters<Parameters<typeof channel.on<'message'>>[1]>[0];
    /** Messages held back behind a Drained that waits for the descriptors to be written, in order. */
    let held: Message[] | null = null;
    let live = true;
    const feed = (message: Message): void => {
      // Heartbeats keep the incumbent alive while the rest waits behind Drained.
      if (held && message.type !== 'Heartbeat') {
        held.push(message);
        return;
      }
      const forwarding = this.#successor?.descriptors;
      if (message.type === 'Drained' && this.#machine.state.moving && forwarding) {
        // Every descriptor forwarded must be in the kernel's hands before the seal and Begin: one
        // still queued in this process when it dies after Begin would be lost to the successor,
        // and the incumbent, its lock gone, could not take its connection back.
        held = [message];
        if (forwarding.pending > 0) publish('descriptorsPending', { handoffId: this.handoffId, pending: forwarding.pending, successorPid: this.#successor?.pid ?? null });
        void forwarding.flushed().then(() => {
          const queued = held ?? [];
          held = null;
          if (live) for (const m of queued) this.#machine.feed({ type: 'incumbentMessage', message: m });
        });
        return;
      }
      this.#machine.feed({ type: 'incumbentMessage', message });
    };
    const onMessage = (message: Message): void => {
      crashPoint(`supervisor:received-${message.type}-from-incumbent`);
      this.#heard('incumbent');
      if (message.type === 'ConnOffer' && this.#machine.state.moving && inc.descriptors?.holds(message.connId) !== true) {
        // The incumbent sends a ConnOffer only once its descriptor was acknowledged: a violation; the incumbent resumes.
        publish('violation', { machine: 'handoff', error: `ConnOffer ${message.connId} from the incumbent without its descriptor` });
        channel.close('ConnOffer without its descriptor');
        return;
      }
      feed(message);
    };
    const onClose = (reason: string): void => {
      // A session that ends because its process died is told apart from one that just ended.
      void waitForDeath(inc.pid, 300).then((dead) => {
        if (held) held = []; // what it said last never reached the machine: its session ended before that
        this.#machine.feed(dead ? { type: 'incumbentExited', reason } : { type: 'incumbentDisconnected', reason });
      });
    };
    channel.on('message', onMessage);
    channel.on('close', onClose);
    this.#detach.push(() => {
      live = false;
      channel.off('message', onMessage);
      channel.off('close', onClose);
    });
    if (inc.exited) {
      void inc.exited.then(() => {
        if (held) held = []; // what it said last never reached the machine: it died before that
        if (live) this.#machine.feed({ type: 'incumbentExited', reason: 'the incumbent process exited' });
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
        if (effect.message.type === 'Begin' && this.#successorLowered && this.#successor) {
          // From Begin on the successor is the one that must serve: its full priority back.
          restorePriority(this.#successor.pid);
          this.#successorLowered = false;
        }
        if (effect.message.type === 'ConnOffer') {
          // The descriptor first, then the frame; the successor matches them by connId.
          const handle = this.#incumbent.descriptors?.take(effect.message.connId);
          const target = this.#successor?.descriptors;
          if (handle && target) target.pass(this.handoffId, effect.message.connId, handle);
          else handle?.close(); // nowhere to pass it: the incumbent keeps its own copy
        }
        this.#successorChannel?.send(effect.message);
        crashPoint(`supervisor:sent-${effect.message.type}-to-successor`);
        return;
      case 'sendToIncumbent':
        // From PrepareHandoff on the incumbent's silence is judged: its CPU time counts from now.
        if (effect.message.type === 'PrepareHandoff') {
          this.#heard('incumbent');
          if (effect.message.moveConns) this.#incumbent.descriptors?.expect(this.handoffId);
        }
        this.#incumbent.session.channel.send(effect.message);
        crashPoint(`supervisor:sent-${effect.message.type}-to-incumbent`);
        return;
      case 'stopSuccessor': {
        const s = this.#successor;
        if (s) void stopProcess(s.pid, effect.graceMs, s.exited);
        return;
      }
      case 'stopIncumbent': {
        // Overlap: the successor accepts already; the old incumbent stops as on an operator's stop.
        const inc = this.#incumbent;
        void stopProcess(inc.pid, effect.graceMs, inc.exited ?? undefined);
        crashPoint('supervisor:stopping-incumbent');
        return;
      }
      case 'coldStart':
        // The lifecycle starts the daemon afresh once the outcome (coldStart) is known.
        return;
      case 'sealProgress':
        publish('sealProgress', { handoffId: this.handoffId, completed: effect.completed, total: effect.total });
        return;
      case 'drainProgress':
        this.#drain = { ...effect.progress, at: Date.now() };
        publish('drainProgress', { handoffId: this.handoffId, ...effect.progress });
        try {
          this.#ctx.onDrainProgress?.(effect.progress);
        } catch {
          // An observer's mistake never changes the handoff.
        }
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
    // Until Begin the incumbent serves: the successor's start-up takes the CPU it leaves.
    const nice = this.#ctx.successorNice ?? 0;
    if (nice > 0 && mayRestorePriority(nice)) this.#successorLowered = lowerPriority(spawned.pid, nice);
    this.#heard('successor');
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
      this.#heard('successor');
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
