/**
 * A deterministic in-memory world in which the four state machines run a supervisor's life
 * around one handoff: the supervisor's lifecycle (recovery, serving, handing off, restarting
 * a daemon that died) with the handoff machine inside it, the incumbent and the successor.
 * Every machine runs in the product's own {@link MachineDriver} on a virtual clock, so the
 * events a driver queues while effects run are handled in the order the product handles
 * them; every message goes through the real codec; the data-directory lock is a
 * single-holder lock freed when its holder dies; hooks (drain, seal, takeover, resume),
 * process-exit notices and timers complete at arbitrary later steps; and any process may be
 * killed at any step — also after the commit point, and also a daemon the supervisor
 * restarted.
 *
 * The scheduler picks among enabled actions using a list of choices (for property-based
 * tests that shrink), then drives to quiescence with a default order. After every step it
 * checks that no process writes without holding the lock; at the end, that exactly one
 * process serves and holds the lock, that the supervisor's lifecycle names that process as
 * the serving daemon, and that no acknowledged write was lost.
 *
 * The successor preloads: it reads the durable revision when it starts (before its Hello) and
 * catches up the rest after Begin. With `stateless`, the daemons keep no data directory and
 * announce `Overlap`: there is no lock and no write; after every step of a run without a
 * crash some daemon accepts (the listeners are never without one), and at the end one serves.
 */
import { FrameDecoder, encodeFrame } from './codec.js';
import { assertNever } from './errors.js';
import { canOfferConnections, incumbentTransition, initialIncumbentState } from './incumbent-machine.js';
import type { IncumbentEffect, IncumbentEvent, IncumbentState, IncumbentTimer } from './incumbent-machine.js';
import { initialLifecycleState, lifecycleTransition } from './lifecycle-machine.js';
import type { LifecycleEffect, LifecycleEvent, LifecycleState, LifecycleTimer } from './lifecycle-machine.js';
import type { CancelTimer, SetTimer, Timeouts, Transition } from './machine.js';
import { DEFAULT_TIMEOUTS } from './machine.js';
import { MachineDriver } from './machine-driver.js';
import type { Clock } from './machine-driver.js';
import type { Direction, Message, ToDaemonMessage, ToSupervisorMessage } from './messages.js';
import { PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN } from './messages.js';
import type { VersionRange } from './negotiation.js';
import { capabilities } from './negotiation.js';
import { successorTransition, initialSuccessorState } from './successor-machine.js';
import type { SuccessorEffect, SuccessorEvent, SuccessorState, SuccessorTimer } from './successor-machine.js';
import { initialSupervisorState, supervisorTransition } from './supervisor-machine.js';
import type { HandoffOutcome, SupervisorEffect, SupervisorEvent, SupervisorState, SupervisorTimer } from './supervisor-machine.js';

/**
 * A process of the simulated world. `restarted` is the daemon the supervisor started last
 * after a death (a cold start of the committed program).
 */
export type SimRole = 'supervisor' | 'incumbent' | 'successor' | 'restarted';

/** Faults injected into the simulated daemons. */
export interface SimFaults {
  readonly drainFails?: boolean;
  readonly sealFails?: boolean;
  readonly successorUnhealthy?: boolean;
  /**
   * The successor opens sealed data one revision behind the seal report. (With no seal
   * report — recovery after the incumbent died — nothing can check the successor's recovery,
   * so the fault applies only when Begin carries a seal; see PROTOCOL.md, "Limits".)
   */
  readonly successorStale?: boolean;
  readonly successorVersions?: VersionRange;
  /** The successor lacks the RecoverFromDisk capability. */
  readonly successorNoRecovery?: boolean;
  /** The successor's catch-up after Begin misses what was written since its preload (it serves its preloaded revision). */
  readonly successorMissesTail?: boolean;
  /** With `stateless`: the successor does not announce Overlap (an older version): the sealed order runs. */
  readonly successorNoOverlap?: boolean;
}

/**
 * A SIGKILL of `role`, if it is alive then: at step `atStep`, or right after the world logs
 * the trace line `afterLine` (a crash point: e.g. `successor takingOver -> ready` is the
 * instant after the successor sent Ready).
 */
export type SimCrash = ({ readonly role: SimRole; readonly atStep: number } | { readonly role: SimRole; readonly afterLine: string }) & {
  /** Scheduler choices for the steps right after the crash (before `choices` resume): who notices first. */
  readonly then?: readonly number[];
};

/** Options of {@link simulateHandoff}. */
export interface SimOptions {
  /** Scheduler choices, consumed one per step (index into the enabled actions, modulo). */
  readonly choices?: readonly (number | undefined)[];
  /**
   * SIGKILLs, at any step: before, during or after the handoff. A daemon's death after the
   * supervisor's is not injected: nobody would restart that daemon until a supervisor runs
   * again, and restarted supervisors are the crash matrix's part.
   */
  readonly crashes?: readonly SimCrash[];
  readonly faults?: SimFaults;
  /** Daemons without a data directory, announcing Overlap (and a supervisor offering it). */
  readonly stateless?: boolean;
  /** Once the choices are used up, acknowledge a write every this many steps (when a writer exists). */
  readonly writeEvery?: number;
  /** Steps before the run is declared stuck. Default 5000. */
  readonly maxSteps?: number;
  /**
   * Replaces the lifecycle's transition function (to show that the checks catch a broken
   * lifecycle; the default is the product's own).
   */
  readonly lifecycleTransition?: (state: LifecycleState, event: LifecycleEvent) => Transition<LifecycleState, LifecycleEffect>;
}

/** What a simulated run ended with. */
export interface SimResult {
  readonly outcome: HandoffOutcome | null;
  /** Alive processes that serve, with whether each holds the lock. */
  readonly serving: readonly { readonly role: SimRole; readonly holdsLock: boolean }[];
  readonly lockHolder: SimRole | null;
  readonly acknowledgedWrites: number;
  readonly durableRevision: number;
  /** The roles killed by injected crashes, in order. */
  readonly crashed: readonly SimRole[];
  /** The lifecycle's final phase, and the restarts it scheduled (null when the supervisor died). */
  readonly lifecycle: { readonly phase: string; readonly restarts: number } | null;
  readonly steps: number;
  /** Who reads each client connection at the end (empty: closed), by connection id. */
  readonly connections: readonly (readonly SimRole[])[];
  /** Broken invariants; empty when the run was correct. */
  readonly problems: readonly string[];
  readonly trace: readonly string[];
}

interface Channel {
  /** Frames in flight per direction; null is EOF. */
  readonly toDaemon: (Uint8Array | null)[];
  readonly toSupervisor: (Uint8Array | null)[];
  readonly daemonDecoder: FrameDecoder<'toDaemon'>;
  readonly supervisorDecoder: FrameDecoder<'toSupervisor'>;
  open: boolean;
}

/** A process of the world; `pid` tells restarted daemons apart. */
interface Proc {
  readonly role: SimRole;
  readonly pid: number;
}

type Op = { readonly who: Proc; readonly name: string; readonly run: () => void };

const SIM_TIMEOUTS: Timeouts = { ...DEFAULT_TIMEOUTS };
/** How often a resuming incumbent (or a starting daemon) tries a lock held by another process before giving up. */
const LOCK_ATTEMPTS = 25;
/** How often the supervisor looks for a daemon's session before it gives up on it. */
const SESSION_ATTEMPTS = 40;
const ALL_CAPS = capabilities('SealProgress', 'RecoverFromDisk', 'ReserveListeners', 'CommitToSuccessor', 'MoveConnections');
/** Idle client connections the incumbent holds when the handoff starts (moved with `MoveConnections`, PROTOCOL.md §6). */
const CONNECTIONS = 2;
const OVERLAP_CAPS = (ALL_CAPS | capabilities('Overlap')) >>> 0;
const REQUEST_ID = 1;

/** Timers whose firing the scheduler picks, each owned by a process (gone when it dies). */
class VirtualTimers {
  #now = 1_000_000;
  #next = 1;
  readonly pending = new Map<number, { readonly owner: Proc; readonly name: string; readonly due: number; readonly fire: () => void }>();

  now(): number {
    return this.#now;
  }

  tick(): void {
    this.#now += 1;
  }

  /** The clock of one machine of `owner`. */
  clockOf(owner: Proc): Clock {
    return {
      now: () => this.#now,
      setTimer: (ms, fire, name = 'timer') => {
        const id = this.#next++;
        this.pending.set(id, { owner, name, due: this.#now + ms, fire });
        return id;
      },
      clearTimer: (handle) => {
        this.pending.delete(handle as number);
      },
    };
  }

  fire(id: number): void {
    const t = this.pending.get(id);
    if (!t) return;
    this.pending.delete(id);
    this.#now = Math.max(this.#now, t.due);
    t.fire();
  }

  dropOwnedBy(proc: Proc): void {
    for (const [id, t] of this.pending) if (t.owner === proc) this.pending.delete(id);
  }
}

function newChannel(): Channel {
  return {
    toDaemon: [],
    toSupervisor: [],
    daemonDecoder: new FrameDecoder({ direction: 'toDaemon' }),
    supervisorDecoder: new FrameDecoder({ direction: 'toSupervisor' }),
    open: true,
  };
}

/** Runs one simulated supervisor life around one handoff. Pure and deterministic for given options. */
export function simulateHandoff(options: SimOptions = {}): SimResult {
  const faults = options.faults ?? {};
  const stateless = options.stateless === true;
  const caps = stateless ? OVERLAP_CAPS : ALL_CAPS;
  const choices = options.choices ?? [];
  const maxSteps = options.maxSteps ?? 5000;
  const trace: string[] = [];
  const problems: string[] = [];
  const clock = new VirtualTimers();
  const log = (line: string): void => {
    trace.push(line);
  };

  const SUPERVISOR: Proc = { role: 'supervisor', pid: 100 };
  const INCUMBENT: Proc = { role: 'incumbent', pid: 200 };
  const SUCCESSOR: Proc = { role: 'successor', pid: 300 };
  let nextRestartPid = 400;
  /** Restarted daemons, oldest first; `serving` once one holds the lock. */
  const restarted: { proc: Proc; serving: boolean }[] = [];
  const alive = new Set<Proc>([SUPERVISOR, INCUMBENT]);
  const name = (p: Proc | null): string => (p ? (p.role === 'restarted' ? `restarted:${p.pid}` : p.role) : 'nobody');

  let lock: Proc | null = stateless ? null : INCUMBENT; // changed by effects
  let disk = 5; // durable revision of the data directory (some data exists before the handoff)
  let acked = disk; // highest acknowledged revision
  /** The revision each process believes the data is at (what it opened, plus its own writes). */
  const views = new Map<Proc, number>([[INCUMBENT, disk]]);
  const crashed: SimRole[] = [];
  let outcome = null as HandoffOutcome | null; // assigned by effects; `as` keeps TS from narrowing it to null
  let settled = false as boolean; // set by effects
  let greeted = false;
  /** The revision the successor preloaded when it started. */
  let preloaded = disk;
  /**
   * Client connections (ids 1..CONNECTIONS): the processes holding a descriptor of each, and
   * those reading from it. Never two readers; at the end each is read by a serving daemon or
   * held by nobody (closed): never held and unread (hung).
   */
  const connHolders = new Map<number, Set<Proc>>();
  const connReaders = new Map<number, Set<Proc>>();
  if (!stateless) {
    for (let c = 1; c <= CONNECTIONS; c++) {
      connHolders.set(c, new Set([INCUMBENT]));
      connReaders.set(c, new Set([INCUMBENT]));
    }
  }
  /** Connections the incumbent offered and stopped reading, and those the successor holds dormant. */
  const offeredByIncumbent = new Set<number>();
  const dormantInSuccessor = new Set<number>();
  const ops: Op[] = [];

  const daemonConfig = (pid: number, buildId: string, daemonCaps = caps, versions: VersionRange = { min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX }) => ({
    pid,
    buildId,
    versions,
    capabilities: daemonCaps,
    heartbeatMs: SIM_TIMEOUTS.heartbeatMs,
    livenessMs: SIM_TIMEOUTS.livenessMs,
  });

  const control: Channel = newChannel(); // supervisor <-> incumbent
  let successorChannel: Channel | null = null;

  const send = (channel: Channel | null, direction: Direction, message: Message): void => {
    if (!channel?.open) return;
    const frame = encodeFrame(message, direction);
    (direction === 'toDaemon' ? channel.toDaemon : channel.toSupervisor).push(frame);
  };
  const closeEnd = (channel: Channel | null, closer: 'daemon' | 'supervisor'): void => {
    if (!channel?.open) return;
    channel.open = false;
    if (closer === 'daemon') {
      channel.toDaemon.length = 0;
      channel.toSupervisor.push(null);
    } else {
      channel.toSupervisor.length = 0;
      channel.toDaemon.push(null);
    }
  };

  const kill = (proc: Proc, why: string): void => {
    if (!alive.has(proc)) return;
    alive.delete(proc);
    log(`${name(proc)} dies: ${why}`);
    if (lock === proc) lock = null;
    for (const holders of connHolders.values()) holders.delete(proc);
    for (const readers of connReaders.values()) readers.delete(proc);
    clock.dropOwnedBy(proc);
    for (let i = ops.length - 1; i >= 0; i--) if (ops[i]?.who === proc) ops.splice(i, 1);
    if (proc === SUPERVISOR) {
      closeEnd(control, 'supervisor');
      closeEnd(successorChannel, 'supervisor');
      return;
    }
    const channel = proc === INCUMBENT ? control : proc === SUCCESSOR ? successorChannel : null;
    if (channel?.open) {
      channel.open = false;
      channel.toDaemon.length = 0;
    }
    if (!alive.has(SUPERVISOR)) return;
    // The supervisor learns of a death from the process's exit (a child) or from its session's
    // end and a check that the process is gone (an adopted daemon): later, at any step. The
    // handoff run and the lifecycle each observe it.
    if ((proc === INCUMBENT || proc === SUCCESSOR) && handoff && !outcome) {
      const event: SupervisorEvent = proc === INCUMBENT ? { type: 'incumbentExited', reason: why } : { type: 'successorGone', reason: why };
      ops.push({ who: SUPERVISOR, name: `handoff run observes the death of ${name(proc)}`, run: () => { handoff?.feed(event); } });
    }
    ops.push({
      who: SUPERVISOR,
      name: `lifecycle observes the death of ${name(proc)}`,
      run: () => { lifecycle.feed({ type: 'daemonExited', pid: proc.pid, reason: why, now: clock.now() }); },
    });
  };

  // ---- incumbent ----------------------------------------------------------------------
  /**
   * A machine of `proc`, named `name` in the trace, in the product's driver on the virtual
   * clock. A violation is logged; the lifecycle's (a driver bug, never a peer's) is a problem.
   */
  const drive = <S extends { readonly phase: string }, E extends { readonly type: string }, X extends { readonly type: string }, T extends string>(
    proc: Proc,
    name: string,
    initial: S,
    transition: (state: S, event: E) => Transition<S, X>,
    onEffect: (effect: Exclude<X, SetTimer<T> | CancelTimer<T>>) => void,
  ): MachineDriver<S, E, X, T> =>
    new MachineDriver<S, E, X, T>({
      initial,
      transition,
      clock: clock.clockOf(proc),
      onEffect,
      onStep: ({ before, after, event, violation }) => {
        if (after.phase !== before.phase) log(`${name} ${before.phase} -> ${after.phase} on ${describeEvent(event)}`);
        if (violation) (name === 'lifecycle' ? problems : trace).push(`${name} violation: ${violation.message}`);
      },
    });

  const incumbent = drive<IncumbentState, IncumbentEvent, IncumbentEffect, IncumbentTimer>(INCUMBENT, 'incumbent', initialIncumbentState(daemonConfig(INCUMBENT.pid, 'v1')), incumbentTransition, (effect) => {
    runIncumbentEffect(effect);
  });
  const feedIncumbent = (event: IncumbentEvent): void => {
    if (alive.has(INCUMBENT)) incumbent.feed(event);
  };
  const runIncumbentEffect = (effect: Exclude<IncumbentEffect, { type: 'setTimer' | 'cancelTimer' }>): void => {
    switch (effect.type) {
      case 'send':
        send(control, 'toSupervisor', effect.message);
        return;
      case 'closeSession':
        if (control.open) {
          closeEnd(control, 'daemon');
          ops.push({
            who: SUPERVISOR,
            name: 'notice incumbent disconnect',
            run: () => {
              if (handoff && !outcome) handoff.feed({ type: 'incumbentDisconnected', reason: 'control session closed by the incumbent' });
              lifecycle.feed({ type: 'sessionLost', pid: INCUMBENT.pid });
            },
          });
        }
        return;
      case 'startDrain':
        ops.push({
          who: INCUMBENT,
          name: 'drain completes',
          run: () => {
            if (faults.drainFails) {
              feedIncumbent({ type: 'drainFailed', error: 'injected' });
              return;
            }
            // Offer each idle connection: stop reading it, pass its descriptor, send ConnOffer.
            let offered = 0;
            for (const c of connHolders.keys()) {
              if (!effect.moveConns || !canOfferConnections(incumbent.state) || !connHolders.get(c)?.has(INCUMBENT)) continue;
              connReaders.get(c)?.delete(INCUMBENT);
              // The descriptor reaches a supervisor whose handoff still runs; otherwise it is closed there.
              if (alive.has(SUPERVISOR) && outcome === null) connHolders.get(c)?.add(SUPERVISOR);
              offeredByIncumbent.add(c);
              offered++;
              feedIncumbent({ type: 'connOffer', offer: { connId: c, listener: 'http', kind: 'http', leftover: new Uint8Array(0), state: null } });
            }
            feedIncumbent({ type: 'drainDone', openConnsRemaining: 0, acceptClosed: true, connsOffered: offered });
          },
        });
        return;
      case 'startSeal':
        ops.push({
          who: INCUMBENT,
          name: 'seal completes',
          run: () => { feedIncumbent(faults.sealFails ? { type: 'sealFailed', error: 'injected' } : { type: 'sealDone', report: stateless ? { revisions: [], fingerprint: '' } : { revisions: [disk], fingerprint: `fp-${disk}` } }); },
        });
        return;
      case 'releaseLock':
        if (lock === INCUMBENT) lock = null;
        feedIncumbent({ type: 'lockReleased' });
        return;
      case 'resume': {
        // The offered connections are read again once the incumbent serves again (lock re-taken).
        const resumeConnections = (): void => {
          for (const c of offeredByIncumbent) if (connHolders.get(c)?.has(INCUMBENT)) connReaders.get(c)?.add(INCUMBENT);
          offeredByIncumbent.clear();
        };
        // The driver retries a held lock for a bounded time (a successor that took it may
        // still give it up), then reports resumeFailed.
        let attempts = 0;
        const attempt = (): void => {
          if (stateless) {
            resumeConnections();
            feedIncumbent({ type: 'resumed' });
          } else if (lock === INCUMBENT || (effect.reacquireLock && lock === null)) {
            lock = INCUMBENT;
            views.set(INCUMBENT, disk); // re-opens its writer
            resumeConnections();
            feedIncumbent({ type: 'resumed' });
          } else if (lock !== null && ++attempts < LOCK_ATTEMPTS) {
            ops.push({ who: INCUMBENT, name: 'resume retries the lock', run: attempt });
          } else {
            feedIncumbent({ type: 'resumeFailed', error: `lock held by ${name(lock)}`, lockTaken: lock !== null });
          }
        };
        ops.push({ who: INCUMBENT, name: 'resume completes', run: attempt });
        return;
      }
      case 'exit':
        kill(INCUMBENT, `exit ${effect.code}: ${effect.reason}`);
        return;
      case 'spawnHolder':
      case 'reload':
        return; // the simulated supervisor never asks for a listener holder or a reload
      default:
        assertNever(effect, 'effect');
    }
  };

  // ---- successor ----------------------------------------------------------------------
  let successor: MachineDriver<SuccessorState, SuccessorEvent, SuccessorEffect, SuccessorTimer> | null = null;
  const feedSuccessor = (event: SuccessorEvent): void => {
    if (alive.has(SUCCESSOR)) successor?.feed(event);
  };
  const runSuccessorEffect = (effect: Exclude<SuccessorEffect, { type: 'setTimer' | 'cancelTimer' }>): void => {
    switch (effect.type) {
      case 'send':
        send(successorChannel, 'toSupervisor', effect.message);
        return;
      case 'closeSession':
        if (successorChannel?.open) closeEnd(successorChannel, 'daemon');
        return;
      case 'takeOver':
        ops.push({
          who: SUCCESSOR,
          name: 'takeover completes',
          run: () => {
            if (stateless) {
              feedSuccessor({ type: 'takeoverDone', listeningOn: ['tcp:127.0.0.1:8080'], healthy: !faults.successorUnhealthy, revisions: [] });
              return;
            }
            if (lock !== null) {
              feedSuccessor({ type: 'takeoverFailed', error: `lock held by ${name(lock)}` });
              return;
            }
            lock = SUCCESSOR;
            // It preloaded when it started and catches up the rest now (unless the fault says otherwise).
            const caughtUp = faults.successorMissesTail ? preloaded : disk;
            const view = faults.successorStale && effect.seal ? caughtUp - 1 : caughtUp;
            views.set(SUCCESSOR, view);
            feedSuccessor({ type: 'takeoverDone', listeningOn: ['tcp:127.0.0.1:8080'], healthy: !faults.successorUnhealthy, revisions: [view] });
          },
        });
        return;
      case 'becomeIncumbent':
        log(`successor becomes the incumbent${effect.promoted ? ' (promoted without a supervisor commit)' : ''}`);
        // Adopted at Commit, or serving alone with the lock (its predecessor resumes them only after
        // re-taking it); serving alone without data, it closes them: its predecessor may resume them.
        for (const c of dormantInSuccessor) {
          if (effect.adoptConnections || (!stateless && lock === SUCCESSOR)) connReaders.get(c)?.add(SUCCESSOR);
          else connHolders.get(c)?.delete(SUCCESSOR);
        }
        dormantInSuccessor.clear();
        return;
      case 'connOffered':
        if (connHolders.get(effect.offer.connId)?.has(SUCCESSOR)) dormantInSuccessor.add(effect.offer.connId);
        else problems.push(`the successor got ConnOffer ${effect.offer.connId} without its descriptor`);
        return;
      case 'exit':
        kill(SUCCESSOR, `exit ${effect.code}: ${effect.reason}`);
        return;
      default:
        assertNever(effect, 'effect');
    }
  };

  // ---- restarted daemons (cold starts of the committed program) ----------------------
  const coldStart = (): Proc => {
    const proc: Proc = { role: 'restarted', pid: nextRestartPid++ };
    alive.add(proc);
    const entry = { proc, serving: false };
    restarted.push(entry);
    let attempts = 0;
    const takeLock = (): void => {
      if (stateless) {
        entry.serving = true;
        log(`${name(proc)} serves`);
      } else if (lock === null) {
        lock = proc;
        views.set(proc, disk);
        entry.serving = true;
        log(`${name(proc)} holds the lock and serves`);
      } else if (++attempts < LOCK_ATTEMPTS) {
        ops.push({ who: proc, name: `${name(proc)} retries the lock`, run: takeLock });
      } else {
        kill(proc, `exit 1: the lock stayed held by ${name(lock)}`);
      }
    };
    ops.push({ who: proc, name: `${name(proc)} takes the lock`, run: takeLock });
    return proc;
  };

  // ---- supervisor: one handoff run ----------------------------------------------------
  let handoff: MachineDriver<SupervisorState, SupervisorEvent, SupervisorEffect, SupervisorTimer> | null = null;
  const runHandoffEffect = (effect: Exclude<SupervisorEffect, { type: 'setTimer' | 'cancelTimer' }>): void => {
    switch (effect.type) {
      case 'journal':
      case 'sealProgress':
      case 'coldStart': // the lifecycle starts the daemon afresh on a coldStart outcome
        return;
      case 'spawnSuccessor': {
        successorChannel = newChannel();
        alive.add(SUCCESSOR);
        const successorCaps = faults.successorNoRecovery ? capabilities('SealProgress') : faults.successorNoOverlap ? ALL_CAPS : caps;
        const config = daemonConfig(SUCCESSOR.pid, 'v2', successorCaps, faults.successorVersions);
        successor = drive<SuccessorState, SuccessorEvent, SuccessorEffect, SuccessorTimer>(SUCCESSOR, 'successor', initialSuccessorState(config), successorTransition, (e) => {
          runSuccessorEffect(e);
        });
        ops.push({
          who: SUCCESSOR,
          name: 'successor preloads and starts',
          run: () => {
            preloaded = disk;
            feedSuccessor({ type: 'start' });
          },
        });
        handoff?.feed({ type: 'spawned', pid: SUCCESSOR.pid });
        lifecycle.feed({ type: 'successorSpawned', requestId: REQUEST_ID, pid: SUCCESSOR.pid });
        return;
      }
      case 'sendToSuccessor':
        // A forwarded ConnOffer: the descriptor goes beside it, and the supervisor's copy is closed.
        if (effect.message.type === 'ConnOffer' && successorChannel?.open) {
          const holders = connHolders.get(effect.message.connId);
          if (holders?.has(SUPERVISOR)) holders.add(SUCCESSOR);
          holders?.delete(SUPERVISOR);
        }
        send(successorChannel, 'toDaemon', effect.message);
        return;
      case 'sendToIncumbent':
        send(control, 'toDaemon', effect.message);
        return;
      case 'stopSuccessor':
        ops.push({ who: SUPERVISOR, name: 'SIGKILL successor', run: () => { kill(SUCCESSOR, 'stopped by the supervisor'); } });
        return;
      case 'stopIncumbent':
        // SIGTERM: the old incumbent stops accepting, finishes its requests and exits.
        ops.push({ who: INCUMBENT, name: 'the old incumbent drains and exits', run: () => { kill(INCUMBENT, 'exit 0: stopped after the overlap commit'); } });
        return;
      case 'drainProgress':
        return;
      case 'finished':
        // Descriptors still held for a handoff that is over are closed (never forwarded later).
        for (const holders of connHolders.values()) holders.delete(SUPERVISOR);
        outcome = effect.outcome;
        log(`handoff finished: ${effect.outcome.kind}${effect.outcome.code ? ` (${effect.outcome.code})` : ''}`);
        lifecycle.feed({ type: 'handoffFinished', requestId: REQUEST_ID, outcome: effect.outcome.kind, now: clock.now() });
        return;
      default:
        assertNever(effect, 'effect');
    }
  };

  // ---- supervisor: the lifecycle --------------------------------------------------------
  const isServing = (pid: number): 'yes' | 'not yet' | 'never' => {
    const proc = [...alive].find((p) => p.pid === pid);
    if (!proc) return 'never';
    const phase = proc === INCUMBENT ? incumbent.state.phase : proc === SUCCESSOR ? successor?.state.phase : undefined;
    if (phase === 'exited' || (proc === INCUMBENT && phase === 'committed')) return 'never';
    if (proc === INCUMBENT) return phase === 'serving' ? 'yes' : 'not yet';
    if (proc === SUCCESSOR) return phase === 'committed' ? 'yes' : 'not yet';
    return restarted.find((r) => r.proc === proc)?.serving ? 'yes' : 'not yet';
  };
  const openSession = (pid: number, onOpen: () => void, onFail: (why: string) => void): void => {
    let attempts = 0;
    const attempt = (): void => {
      const s = isServing(pid);
      if (s === 'yes') onOpen();
      else if (s === 'not yet' && ++attempts < SESSION_ATTEMPTS) ops.push({ who: SUPERVISOR, name: `look for the session of ${pid}`, run: attempt });
      else if (s === 'not yet') onFail('no answer on the control socket');
      // 'never': the process is dead or exiting; its death is reported as daemonExited.
    };
    ops.push({ who: SUPERVISOR, name: `open a session with ${pid}`, run: attempt });
  };
  const runLifecycleEffect = (effect: Exclude<LifecycleEffect, { type: 'setTimer' | 'cancelTimer' }>): void => {
    switch (effect.type) {
      case 'recover': {
        if (!greeted) {
          // At start, the supervisor's session layer greets the incumbent, which recovery adopts.
          greeted = true;
          feedIncumbent({ type: 'sessionOpened' });
          const hello = control.toSupervisor.shift();
          const greeting = hello ? control.supervisorDecoder.push(hello)[0] : undefined;
          if (!greeting?.ok || greeting.message.type !== 'Hello') problems.push('the incumbent did not open its session with Hello');
          send(control, 'toDaemon', { type: 'HelloAck', version: PROTOCOL_VERSION_MAX, handoffId: null, capabilities: caps });
          lifecycle.feed({ type: 'recovered', adopted: { pid: INCUMBENT.pid, buildId: 'v1' }, now: clock.now() });
          return;
        }
        // Before a restart: adopt the live lock holder once it answers; wait (bounded) while
        // it is still on its way; cold-start when nobody holds the lock.
        let attempts = 0;
        const attempt = (): void => {
          // Without a data directory, whoever answers on the control socket is adopted.
          const holder = stateless ? (daemons().find((p) => isServing(p.pid) === 'yes') ?? daemons().find((p) => isServing(p.pid) === 'not yet') ?? null) : lock;
          if (holder && isServing(holder.pid) === 'yes') lifecycle.feed({ type: 'recovered', adopted: { pid: holder.pid, buildId: '' }, now: clock.now() });
          else if (holder && ++attempts < SESSION_ATTEMPTS) ops.push({ who: SUPERVISOR, name: 'recovery waits for the lock holder', run: attempt });
          else lifecycle.feed({ type: 'recovered', adopted: null, now: clock.now() });
        };
        ops.push({ who: SUPERVISOR, name: 'recovery looks for the lock holder', run: attempt });
        return;
      }
      case 'coldStart': {
        const proc = coldStart();
        lifecycle.feed({ type: 'coldSpawned', pid: proc.pid });
        openSession(
          proc.pid,
          () => { lifecycle.feed({ type: 'sessionOpened', pid: proc.pid, buildId: 'v2', now: clock.now() }); },
          (why) => { lifecycle.feed({ type: 'coldStartFailed', pid: proc.pid, reason: why, now: clock.now() }); },
        );
        return;
      }
      case 'openSession':
        openSession(
          effect.pid,
          () => { lifecycle.feed({ type: 'sessionOpened', pid: effect.pid, buildId: '', now: clock.now() }); },
          (why) => { lifecycle.feed({ type: 'sessionFailed', pid: effect.pid, reason: why, now: clock.now() }); },
        );
        return;
      case 'runHandoff': {
        const run = drive<SupervisorState, SupervisorEvent, SupervisorEffect, SupervisorTimer>(SUPERVISOR, 'supervisor', initialSupervisorState(), supervisorTransition, (e) => {
          runHandoffEffect(e);
        });
        handoff = run;
        run.feed({ type: 'start', spec: { handoffId: 'h-1', timeouts: SIM_TIMEOUTS, capabilities: caps, moveConnections: !stateless } });
        return;
      }
      case 'rejectHandoff':
        problems.push(`the handoff was refused: ${effect.code}: ${effect.message}`);
        return;
      case 'handoffSettled':
        settled = true;
        log(`handoff request answered: serving ${String(effect.servingPid)}${effect.aftermath ? ` (${effect.aftermath})` : ''}`);
        return;
      case 'stopDaemon': {
        const proc = [...alive].find((p) => p.pid === effect.pid);
        if (proc) ops.push({ who: SUPERVISOR, name: `stop ${name(proc)}`, run: () => { kill(proc, `stopped by the supervisor: ${effect.reason}`); } });
        return;
      }
      case 'stopAll':
        problems.push('the simulated supervisor was never asked to stop');
        return;
      case 'serving':
        log(`lifecycle: pid ${effect.pid} serves (generation ${effect.generation}, ${effect.how})`);
        return;
      case 'restartScheduled':
        log(`lifecycle: restart in ${effect.delayMs} ms: ${effect.reason}`);
        return;
      case 'gaveUp':
        log(`lifecycle gave up: ${effect.reason}`);
        return;
      case 'revert':
        log(`lifecycle: back to the last known good version (${effect.how}): ${effect.reason}`);
        return;
      case 'probationStarted':
      case 'probationEnded':
        // The simulation runs without probation (window 0): a new version is good once it serves.
        problems.push(`unexpected ${effect.type} with probation off`);
        return;
      default:
        assertNever(effect, 'effect');
    }
  };
  const lifecycle = drive<LifecycleState, LifecycleEvent, LifecycleEffect, LifecycleTimer>(
    SUPERVISOR,
    'lifecycle',
    initialLifecycleState({ command: 'daemon', args: [], env: {}, cwd: null }),
    options.lifecycleTransition ?? lifecycleTransition,
    (e) => {
      runLifecycleEffect(e);
    },
  );

  // ---- world ---------------------------------------------------------------------------
  const daemons = (): Proc[] => [...alive].filter((p) => p !== SUPERVISOR);
  const writers = (): Proc[] =>
    stateless ? [] : daemons().filter((p) => {
      if (p === INCUMBENT) return incumbent.state.phase === 'serving' || incumbent.state.phase === 'draining';
      if (p === SUCCESSOR) return successor?.state.phase === 'ready' || successor?.state.phase === 'committed';
      return restarted.find((r) => r.proc === p)?.serving === true;
    });
  /** Processes that believe they hold the lock (the incumbent while releasing is excluded: it is letting go). */
  const believedHolders = (): Proc[] =>
    stateless ? [] : daemons().filter((p) => {
      if (p === INCUMBENT) return incumbent.state.lockHeld && incumbent.state.phase !== 'releasing';
      if (p === SUCCESSOR) return successor?.state.lockHeld === true;
      return restarted.find((r) => r.proc === p)?.serving === true;
    });
  const servers = (): Proc[] => daemons().filter((p) => isServing(p.pid) === 'yes');
  /** Daemons that accept on the listeners now: an incumbent before its drain, a successor once it listens. */
  const acceptors = (): Proc[] =>
    daemons().filter((p) => {
      if (p === INCUMBENT) return incumbent.state.phase === 'serving';
      if (p === SUCCESSOR) return successor?.state.phase === 'ready' || successor?.state.phase === 'committed';
      return restarted.find((r) => r.proc === p)?.serving === true;
    });

  type Action = { readonly label: string; readonly run: () => void; readonly background: boolean };
  const deliverFrom = (channel: Channel, direction: Direction, to: Proc): Action | undefined => {
    const queue = direction === 'toDaemon' ? channel.toDaemon : channel.toSupervisor;
    if (queue.length === 0 || !alive.has(to)) return undefined;
    return {
      label: `deliver ${direction} to ${name(to)}`,
      background: false,
      run: () => {
        const frame = queue.shift();
        if (frame === undefined) return;
        if (frame === null) {
          if (to === INCUMBENT) feedIncumbent({ type: 'sessionClosed', reason: 'EOF' });
          else if (to === SUCCESSOR) feedSuccessor({ type: 'sessionClosed', reason: 'EOF' });
          return; // the supervisor learns of daemon deaths from exits, not EOFs
        }
        const decoder = direction === 'toDaemon' ? channel.daemonDecoder : channel.supervisorDecoder;
        for (const result of decoder.push(frame)) {
          if (!result.ok) {
            problems.push(`codec rejected a frame the machines produced: ${result.error.message}`);
            continue;
          }
          if (direction === 'toDaemon') {
            const message = result.message as ToDaemonMessage;
            log(`${name(to)} <- ${message.type}`);
            if (to === INCUMBENT) feedIncumbent({ type: 'message', message });
            else feedSuccessor({ type: 'message', message });
          } else {
            const message = result.message as ToSupervisorMessage;
            log(`supervisor <- ${message.type} from ${channel === control ? 'incumbent' : 'successor'}`);
            // Past the handoff, the lifecycle's session watcher gets the incumbent's messages
            // (heartbeats only); the finished handoff run ignores them.
            handoff?.feed(channel === control ? { type: 'incumbentMessage', message } : { type: 'successorMessage', message });
          }
        }
      },
    };
  };

  const enabled = (): Action[] => {
    const actions: Action[] = [];
    const add = (a: Action | undefined): void => {
      if (a) actions.push(a);
    };
    add(deliverFrom(control, 'toSupervisor', SUPERVISOR));
    add(deliverFrom(control, 'toDaemon', INCUMBENT));
    if (successorChannel) {
      add(deliverFrom(successorChannel, 'toSupervisor', SUPERVISOR));
      add(deliverFrom(successorChannel, 'toDaemon', SUCCESSOR));
    }
    for (const op of ops) {
      if (!alive.has(op.who)) continue;
      actions.push({
        label: op.name,
        background: false,
        run: () => {
          ops.splice(ops.indexOf(op), 1);
          op.run();
        },
      });
    }
    for (const [id, t] of clock.pending) {
      if (!alive.has(t.owner)) continue;
      // Heartbeats are background noise; every other timer is a step of its own.
      actions.push({ label: `${name(t.owner)} timer ${t.name} fires`, background: t.name === 'heartbeat', run: () => { clock.fire(id); } });
    }
    for (const w of writers()) {
      actions.push({
        label: `${name(w)} acknowledges a write`,
        background: true,
        run: () => {
          const view = views.get(w) ?? 0;
          if (lock !== w) problems.push(`${name(w)} wrote without holding the lock (holder: ${name(lock)})`);
          if (view !== disk) problems.push(`${name(w)} wrote from revision ${view} over durable revision ${disk}: acknowledged writes lost`);
          views.set(w, view + 1);
          disk = view + 1;
          acked = Math.max(acked, disk);
        },
      });
    }
    return actions;
  };

  // ---- run ----------------------------------------------------------------------------
  lifecycle.feed({ type: 'start', now: clock.now() });
  lifecycle.feed({ type: 'handoffRequested', requestId: REQUEST_ID, change: { env: { BUILD_ID: 'v2' } }, now: clock.now() });

  const pendingCrashes = [...(options.crashes ?? [])];
  /** Injects the crashes due now: at this step, or after a trace line logged since `seen`. */
  const injectCrashes = (seen: number): void => {
    for (const crash of [...pendingCrashes]) {
      const due = 'atStep' in crash ? crash.atStep === step : trace.slice(seen).includes(crash.afterLine);
      if (!due) continue;
      pendingCrashes.splice(pendingCrashes.indexOf(crash), 1);
      if (!alive.has(SUPERVISOR) && crash.role !== 'supervisor') continue;
      const target = crash.role === 'restarted' ? restarted.at(-1)?.proc : [SUPERVISOR, INCUMBENT, SUCCESSOR].find((p) => p.role === crash.role);
      if (target && alive.has(target)) {
        crashed.push(crash.role);
        kill(target, 'SIGKILL (injected)');
        forced.push(...(crash.then ?? []));
      }
    }
  };
  /** Choices that take precedence over `choices` (a crash's `then`). */
  const forced: number[] = [];

  let step = 0;
  for (; step < maxSteps; step++) {
    injectCrashes(trace.length);
    const actions = enabled();
    const foreground = actions.filter((a) => !a.background);
    const choice = forced.length > 0 ? forced.shift() : choices[step];
    let action: Action | undefined;
    if (choice !== undefined && actions.length > 0) {
      action = actions[Math.abs(choice) % actions.length];
    } else {
      // Default order: a periodic write, then messages and hook completions, then timers.
      const write = options.writeEvery && step % options.writeEvery === 0 ? actions.find((a) => a.label.endsWith('acknowledges a write')) : undefined;
      action = write ?? foreground.find((a) => !a.label.endsWith('timer fires')) ?? foreground[0];
    }
    if (!action) {
      if (!pendingCrashes.some((c) => 'atStep' in c && c.atStep > step)) break;
      clock.tick();
      continue;
    }
    clock.tick();
    const seen = trace.length;
    action.run();
    injectCrashes(seen);
    const w = writers();
    for (const writer of w) {
      if (lock !== writer) problems.push(`step ${step}: ${name(writer)} is in a writing state without holding the lock (holder: ${name(lock)})`);
    }
    if (w.length > 1) problems.push(`step ${step}: two writers at once: ${w.map(name).join(', ')}`);
    const holders = believedHolders();
    if (holders.length > 1) problems.push(`step ${step}: two processes believe they hold the lock: ${holders.map(name).join(', ')}`);
    for (const [c, readers] of connReaders) if (readers.size > 1) problems.push(`step ${step}: connection ${c} read by two processes: ${[...readers].map(name).join(', ')}`);
    for (const holder of holders) {
      if (lock !== holder) problems.push(`step ${step}: ${name(holder)} believes it holds the lock, but ${name(lock)} does`);
    }
    // Overlap: the listeners never go without a daemon accepting on them (barring a crash).
    if (stateless && !faults.successorNoOverlap && crashed.length === 0 && acceptors().length === 0) problems.push(`step ${step}: no daemon accepts`);
  }
  if (step >= maxSteps) problems.push(`no quiescence after ${maxSteps} steps`);

  const serving = servers().map((proc) => ({ role: proc.role, holdsLock: lock === proc }));
  const servingProcs = servers();
  const supervisorAlive = alive.has(SUPERVISOR);
  if (stateless) {
    // No lock, no data: one daemon serves (two only while no supervisor runs to stop the old one).
    if (serving.length === 0 || (supervisorAlive && serving.length > 1)) problems.push(`expected one serving daemon, found ${serving.length}: ${servingProcs.map(name).join(', ') || 'none'}`);
  } else if (serving.length !== 1) problems.push(`expected exactly one serving daemon, found ${serving.length}: ${servingProcs.map(name).join(', ') || 'none'}`);
  if (!stateless) for (const p of servingProcs) if (lock !== p) problems.push(`${name(p)} serves without holding the lock`);
  if (disk < acked) problems.push(`acknowledged writes lost: acked ${acked}, durable ${disk}`);
  // Every client connection is served by a daemon that serves, or closed (nobody holds it); never hung.
  for (const [c, holders] of connHolders) {
    const readers = [...(connReaders.get(c) ?? [])];
    if (holders.size > 0 && !readers.some((r) => servingProcs.includes(r))) problems.push(`connection ${c} is held by ${[...holders].map(name).join(', ')} but no serving daemon reads it (hung)`);
  }
  if (!stateless) for (const p of servingProcs) if (views.get(p) !== disk) problems.push(`${name(p)} serves revision ${String(views.get(p))}, the data is at ${disk}`);
  if (supervisorAlive) {
    const life = lifecycle.state;
    // What the supervisor reports must be the truth: it serves with the daemon that serves.
    if (life.phase !== 'serving') problems.push(`the supervisor's lifecycle ended in ${life.phase}, not serving${life.failure ? `: ${life.failure}` : ''}`);
    const reported = life.daemon?.pid ?? null;
    const actual = servingProcs.length === 1 ? (servingProcs[0] as Proc).pid : null;
    if (reported !== actual) problems.push(`the supervisor reports pid ${String(reported)} as serving, but ${String(actual)} serves`);
    if (!settled) problems.push('the handoff request was never answered');
  }
  if (crashed.length === 0 && outcome === null) problems.push('the handoff never finished though no process crashed');
  if (outcome?.committed && crashed.length === 0 && !servingProcs.includes(SUCCESSOR)) problems.push('the handoff committed but the successor does not serve');
  return {
    outcome,
    serving,
    lockHolder: lock?.role ?? null,
    acknowledgedWrites: acked,
    durableRevision: disk,
    crashed,
    lifecycle: supervisorAlive ? { phase: lifecycle.state.phase, restarts: lifecycle.state.restarts } : null,
    steps: step,
    connections: [...connReaders.entries()].sort(([a], [b]) => a - b).map(([c, readers]) => ((connHolders.get(c)?.size ?? 0) > 0 ? [...readers].map((p) => p.role) : [])),
    problems,
    trace,
  };
}

function describeEvent(event: { readonly type: string; readonly message?: { readonly type: string }; readonly timer?: string }): string {
  if (event.message) return `${event.type}:${event.message.type}`;
  if (event.timer) return `${event.type}:${event.timer}`;
  return event.type;
}
