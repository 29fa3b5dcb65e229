/**
 * The successor driver, as typestate: `Successor.handshake()` returns the only object with
 * `waitForBegin()`, which returns the only object with `announceReady()`, so the protocol's
 * order cannot be broken at compile time. It runs the successor state machine of
 * `@handoff/protocol` over the socket pair the supervisor passed (`HANDOFF_SOCK_FD`).
 *
 * When the machine exits (Abort, a dead supervisor before the lock was taken, a violation),
 * every pending call rejects with a CoreError and {@link SuccessorSession.exited} says
 * with which code the process should exit.
 */
import { Socket } from 'node:net';
import { hasCapability, initialSuccessorState, successorTransition } from '@handoff/protocol';
import { MachineDriver, assertNever, readBeforeJudging } from '@handoff/protocol/internal';
import type { SealReport, SuccessorEffect, SuccessorEvent, SuccessorPhase, SuccessorState, SuccessorTimer } from '@handoff/protocol';
import { Channel } from './channel.js';
import { crashPoint } from './crash-points.js';
import { CoreError, CoreErrorCode } from './errors.js';
import { Incumbent, daemonConfig } from './incumbent.js';
import type { IncumbentExit, IncumbentOptions } from './incumbent.js';
import { HeldConnections } from './moving.js';
import type { AdoptedConnection } from './moving.js';

/** Options of {@link Successor.connect}. */
export interface SuccessorOptions {
  /** The fd of the channel (from `detectRole()`). */
  readonly channelFd: number;
  readonly capabilities?: number;
  readonly heartbeatMs?: number;
  readonly livenessMs?: number;
  /**
   * The daemon keeps a data directory (its lock decides who writes): serving alone without
   * Commit while holding the lock, it keeps the connections moved to it, which its predecessor
   * can no longer resume (PROTOCOL.md §6, "Moving connections").
   */
  readonly ownsData?: boolean;
}

/** Whether `capabilities` announce MoveConnections (then offered connections are received). */
function receivesConnections(capabilities: number | undefined): boolean {
  return capabilities !== undefined && hasCapability(capabilities, 'MoveConnections');
}

/** What the successor reports in Ready. */
export interface Readiness {
  readonly listeningOn: readonly string[];
  readonly healthy: boolean;
  readonly revisions: readonly number[];
}

type Waiter = { readonly until: (phase: SuccessorPhase) => boolean; readonly resolve: () => void; readonly reject: (e: CoreError) => void };

/** The machine and its I/O; shared by the typestate objects. */
class SuccessorSession {
  readonly #machine: MachineDriver<SuccessorState, SuccessorEvent, SuccessorEffect, SuccessorTimer>;
  readonly #channel: Channel<'toSupervisor'>;
  #waiters: Waiter[] = [];
  #takeover: { handoffId: string; seal: SealReport | null; state: Uint8Array | null; conns: number } | undefined;
  /** Connections offered to this successor (PROTOCOL.md section 6, "Moving connections"): dormant until Commit. */
  readonly held: HeldConnections;
  readonly #ownsData: boolean;
  #adopted: AdoptedConnection[] = [];
  #promoted: boolean | undefined;
  #resolveExit!: (exit: IncumbentExit) => void;
  readonly exited: Promise<IncumbentExit>;

  constructor(options: SuccessorOptions, buildId: string) {
    this.held = new HeldConnections(receivesConnections(options.capabilities));
    this.#ownsData = options.ownsData ?? false;
    this.#machine = new MachineDriver({
      initial: initialSuccessorState(daemonConfig(buildId, options)),
      transition: successorTransition,
      // A takeover that blocked this event loop must not make the live supervisor look dead.
      postpone: readBeforeJudging(),
      onEffect: (effect) => {
        this.#run(effect);
      },
      // After every transition, timeouts included. (Promises settle after the effects ran.)
      onStep: () => {
        this.#settleWaiters();
      },
    });
    this.exited = new Promise((resolve) => {
      this.#resolveExit = resolve;
    });
    this.#channel = new Channel(new Socket({ fd: options.channelFd, readable: true, writable: true }), 'toSupervisor');
    this.#channel.on('message', (message) => {
      crashPoint(`successor:received-${message.type}`);
      this.feed({ type: 'message', message });
    });
    this.#channel.on('close', (reason) => {
      // No more offers can come: a takeover waiting for them goes on; what is held waits for
      // the outcome (adopted if this process then serves holding the lock, else closed).
      this.held.stop();
      this.feed({ type: 'sessionClosed', reason });
    });
  }

  get phase(): SuccessorPhase {
    return this.#machine.state.phase;
  }

  get takeover(): { handoffId: string; seal: SealReport | null; state: Uint8Array | null; conns: number } {
    if (!this.#takeover) throw new CoreError(CoreErrorCode.WrongState, `no Begin received (phase ${this.phase})`);
    return this.#takeover;
  }

  get promoted(): boolean {
    return this.#promoted ?? false;
  }

  /** The connections adopted at Commit, once: the caller serves them. */
  takeAdopted(): AdoptedConnection[] {
    const adopted = this.#adopted;
    this.#adopted = [];
    return adopted;
  }

  feed(event: SuccessorEvent): void {
    this.#machine.feed(event);
  }

  /** Resolves when the phase satisfies `until`; rejects when the successor exits first. */
  waitFor(until: (phase: SuccessorPhase) => boolean): Promise<void> {
    if (until(this.phase)) return Promise.resolve();
    if (this.phase === 'exited') return Promise.reject(this.#exitError());
    return new Promise((resolve, reject) => {
      this.#waiters.push({ until, resolve, reject });
    });
  }

  #exitError(): CoreError {
    const { reason, exitError } = this.#machine.state;
    return new CoreError(exitError ?? CoreErrorCode.ChannelClosed, reason ?? 'the successor exited');
  }

  #settleWaiters(): void {
    const phase = this.phase;
    const waiting = this.#waiters;
    this.#waiters = [];
    for (const w of waiting) {
      if (w.until(phase)) w.resolve();
      else if (phase === 'exited') w.reject(this.#exitError());
      else this.#waiters.push(w);
    }
  }

  #run(effect: Exclude<SuccessorEffect, { type: 'setTimer' | 'cancelTimer' }>): void {
    switch (effect.type) {
      case 'send':
        this.#channel.send(effect.message);
        crashPoint(`successor:sent-${effect.message.type}`);
        return;
      case 'closeSession':
        this.#channel.close('closed by the successor');
        return;
      case 'takeOver':
        this.#takeover = { handoffId: effect.handoffId, seal: effect.seal, state: effect.state, conns: effect.conns };
        return;
      case 'connOffered':
        this.held.offered(effect.offer);
        return;
      case 'becomeIncumbent':
        this.#promoted = effect.promoted;
        // Adopted on Commit, or serving alone with the lock (the predecessor resumes them only
        // after re-taking it); serving alone without data, the predecessor may resume them: closed.
        if (effect.adoptConnections || (this.#ownsData && this.#machine.state.lockHeld)) this.#adopted = this.held.adopt();
        else this.held.close();
        this.#machine.stopTimers();
        this.#channel.close('committed');
        return;
      case 'exit':
        this.held.close();
        this.#machine.stopTimers();
        this.#resolveExit({ code: effect.code, reason: effect.reason });
        return;
      default:
        assertNever(effect, 'effect');
    }
  }
}

/** A successor that has not spoken yet. */
export class Successor {
  readonly #options: SuccessorOptions;

  private constructor(options: SuccessorOptions) {
    this.#options = options;
  }

  /** Wraps the channel fd from `detectRole()`. */
  static connect(options: SuccessorOptions): Successor {
    return new Successor(options);
  }

  /**
   * Says Hello with `buildId` and waits for the supervisor's HelloAck.
   * @throws CoreError HANDOFF_ABORTED or HANDOFF_CHANNEL_CLOSED when the successor must exit instead.
   */
  async handshake(buildId: string): Promise<HandshookSuccessor> {
    crashPoint('successor:before-handshake');
    const session = new SuccessorSession(this.#options, buildId);
    session.feed({ type: 'start' });
    await session.waitFor((p) => p !== 'init' && p !== 'awaitingAck');
    crashPoint('successor:after-handshake');
    return HandshookSuccessor.of(session);
  }
}

/** A successor that completed its handshake. */
export class HandshookSuccessor {
  readonly #session: SuccessorSession;

  private constructor(session: SuccessorSession) {
    this.#session = session;
  }

  /** @internal */
  static of(session: SuccessorSession): HandshookSuccessor {
    return new HandshookSuccessor(session);
  }

  /** Resolves with the exit code the process should use if the handoff is abandoned. */
  get exited(): Promise<IncumbentExit> {
    return this.#session.exited;
  }

  /**
   * Waits until the incumbent has sealed and released the lock (Begin).
   * @throws CoreError HANDOFF_ABORTED or HANDOFF_CHANNEL_CLOSED when the successor must exit instead.
   */
  async waitForBegin(): Promise<BegunSuccessor> {
    await this.#session.waitFor((p) => p === 'takingOver');
    crashPoint('successor:after-begin');
    return BegunSuccessor.of(this.#session);
  }
}

/** A successor told to take over: take the lock, open the data, check it, listen, then announce. */
export class BegunSuccessor {
  readonly #session: SuccessorSession;

  private constructor(session: SuccessorSession) {
    this.#session = session;
  }

  /** @internal */
  static of(session: SuccessorSession): BegunSuccessor {
    return new BegunSuccessor(session);
  }

  get handoffId(): string {
    return this.#session.takeover.handoffId;
  }

  /** The incumbent's seal report; null when it died: recover from disk. */
  get seal(): SealReport | null {
    return this.#session.takeover.seal;
  }

  /** The incumbent's handover state from Begin (opaque bytes, PROTOCOL.md §6 "Handover state"); null when none. */
  get state(): Uint8Array | null {
    return this.#session.takeover.state;
  }

  get exited(): Promise<IncumbentExit> {
    return this.#session.exited;
  }

  /** The takeover failed (the lock is not held): tells the machine, which exits. */
  fail(error: string): void {
    this.#session.feed({ type: 'takeoverFailed', error });
  }

  /**
   * Sends Ready and waits for Commit (or for promotion, if the supervisor goes away now that
   * this process holds the lock); then binds the control socket and returns the incumbent.
   * When the revisions do not continue the seal, the machine reports Ready and exits instead.
   * @throws CoreError HANDOFF_ABORTED or HANDOFF_CHANNEL_CLOSED when the successor must exit.
   */
  async announceReady(readiness: Readiness, incumbent: Omit<IncumbentOptions, 'replaceControlSocket'>): Promise<Incumbent> {
    // Ready says every offered connection is here (held, not read): the supervisor's phase
    // deadline bounds the wait. Without a supervisor any more, the takeover goes on without them.
    await this.#session.held.await(this.#session.takeover.conns).catch(() => undefined);
    this.#session.feed({ type: 'takeoverDone', listeningOn: readiness.listeningOn, healthy: readiness.healthy, revisions: readiness.revisions });
    await this.#session.waitFor((p) => p === 'committed');
    crashPoint('successor:committed');
    const bound = await Incumbent.bind({ ...incumbent, replaceControlSocket: true });
    crashPoint('successor:control-bound');
    return bound;
  }

  /** True when this successor became the incumbent without the supervisor's Commit. */
  get promoted(): boolean {
    return this.#session.promoted;
  }

  /**
   * The idle connections the incumbent handed over, adopted at Commit (empty before, and when
   * this successor serves alone): each paused, its unread bytes beside it. Returned once.
   */
  takeAdoptedConnections(): AdoptedConnection[] {
    return this.#session.takeAdopted();
  }
}
