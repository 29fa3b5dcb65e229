/**
 * A deterministic in-memory world in which the three state machines perform a handoff:
 * every message goes through the real codec, the data-directory lock is a single-holder
 * lock freed when its holder dies, hooks (drain, seal, takeover, resume) complete at
 * arbitrary later steps, timers fire at arbitrary times, and any process may be killed.
 *
 * The scheduler picks among enabled actions using a list of choices (for property-based
 * tests that shrink), then drives to quiescence with a default order. After every step it
 * checks that no process writes without holding the lock; at the end, that exactly one
 * process serves and holds the lock and that no acknowledged write was lost.
 */
import { FrameDecoder, encodeFrame } from './codec.js';
import { assertNever } from './errors.js';
import { incumbentTransition, initialIncumbentState } from './incumbent-machine.js';
import type { IncumbentEffect, IncumbentEvent, IncumbentState } from './incumbent-machine.js';
import type { Timeouts } from './machine.js';
import { DEFAULT_TIMEOUTS } from './machine.js';
import type { Direction, Message, ToDaemonMessage, ToSupervisorMessage } from './messages.js';
import { PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN } from './messages.js';
import type { VersionRange } from './negotiation.js';
import { capabilities } from './negotiation.js';
import { successorTransition, initialSuccessorState } from './successor-machine.js';
import type { SuccessorEffect, SuccessorEvent, SuccessorState } from './successor-machine.js';
import { initialSupervisorState, supervisorTransition } from './supervisor-machine.js';
import type { HandoffOutcome, SupervisorEffect, SupervisorEvent, SupervisorState } from './supervisor-machine.js';

/** A process of the simulated world. */
export type SimRole = 'supervisor' | 'incumbent' | 'successor' | 'cold';

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
}

/** Options of {@link simulateHandoff}. */
export interface SimOptions {
  /** Scheduler choices, consumed one per step (index into the enabled actions, modulo). */
  readonly choices?: readonly number[];
  /** Kill `role` with SIGKILL at this step, if it is alive and the handoff is unfinished. */
  readonly crash?: { readonly role: 'supervisor' | 'incumbent' | 'successor'; readonly atStep: number };
  readonly faults?: SimFaults;
  /** Once the choices are used up, acknowledge a write every this many steps (when a writer exists). */
  readonly writeEvery?: number;
  /** Steps before the run is declared stuck. Default 5000. */
  readonly maxSteps?: number;
}

/** What a simulated run ended with. */
export interface SimResult {
  readonly outcome: HandoffOutcome | null;
  /** Alive processes that serve, with whether each holds the lock. */
  readonly serving: readonly { readonly role: SimRole; readonly holdsLock: boolean }[];
  readonly lockHolder: SimRole | null;
  readonly acknowledgedWrites: number;
  readonly durableRevision: number;
  readonly crashed: SimRole | null;
  readonly steps: number;
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

type Op = { readonly who: SimRole; readonly name: string; readonly run: () => void };
type Timer = { readonly who: SimRole; readonly timer: string };

const SIM_TIMEOUTS: Timeouts = { ...DEFAULT_TIMEOUTS };
/** How often a resuming incumbent tries a lock held by another process before giving up. */
const RESUME_ATTEMPTS = 25;
const ALL_CAPS = capabilities('SealProgress', 'RecoverFromDisk', 'ReserveListeners', 'CommitToSuccessor');

function newChannel(): Channel {
  return {
    toDaemon: [],
    toSupervisor: [],
    daemonDecoder: new FrameDecoder({ direction: 'toDaemon' }),
    supervisorDecoder: new FrameDecoder({ direction: 'toSupervisor' }),
    open: true,
  };
}

/** Runs one simulated handoff. Pure and deterministic for given options. */
export function simulateHandoff(options: SimOptions = {}): SimResult {
  const faults = options.faults ?? {};
  const choices = options.choices ?? [];
  const maxSteps = options.maxSteps ?? 5000;
  const trace: string[] = [];
  const problems: string[] = [];
  const alive = new Set<SimRole>(['supervisor', 'incumbent']);
  let lock = 'incumbent' as SimRole | null;
  let disk = 5; // durable revision of the data directory (some data exists before the handoff)
  let acked = disk; // highest acknowledged revision
  /** The revision each process believes the data is at (what it opened, plus its own writes). */
  const views: Record<SimRole, number> = { supervisor: 0, incumbent: disk, successor: 0, cold: 0 };
  let crashed: SimRole | null = null;
  let outcome = null as HandoffOutcome | null; // assigned by effects; `as` keeps TS from narrowing it to null
  const ops: Op[] = [];
  const timers: Timer[] = [];
  const pids: Record<SimRole, number> = { supervisor: 100, incumbent: 200, successor: 300, cold: 400 };

  let sup: SupervisorState = initialSupervisorState();
  let inc: IncumbentState = initialIncumbentState({
    pid: pids.incumbent,
    buildId: 'v1',
    versions: { min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX },
    capabilities: ALL_CAPS,
    heartbeatMs: SIM_TIMEOUTS.heartbeatMs,
    livenessMs: SIM_TIMEOUTS.livenessMs,
  });
  let suc: SuccessorState | null = null;
  let coldServing = false;
  const control: Channel = newChannel(); // supervisor <-> incumbent
  let successorChannel: Channel | null = null;

  const log = (line: string): void => {
    trace.push(line);
  };

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

  const setTimer = (who: SimRole, timer: string): void => {
    if (!timers.some((t) => t.who === who && t.timer === timer)) timers.push({ who, timer });
  };
  const cancelTimer = (who: SimRole, timer: string): void => {
    const i = timers.findIndex((t) => t.who === who && t.timer === timer);
    if (i >= 0) timers.splice(i, 1);
  };

  const kill = (who: SimRole, why: string): void => {
    if (!alive.has(who)) return;
    alive.delete(who);
    log(`${who} dies: ${why}`);
    if (lock === who) lock = null;
    for (let i = timers.length - 1; i >= 0; i--) if (timers[i]?.who === who) timers.splice(i, 1);
    for (let i = ops.length - 1; i >= 0; i--) if (ops[i]?.who === who) ops.splice(i, 1);
    if (who === 'supervisor') {
      closeEnd(control, 'supervisor');
      closeEnd(successorChannel, 'supervisor');
    } else if (who === 'incumbent') {
      if (control.open) {
        control.open = false;
        control.toDaemon.length = 0;
      }
      if (alive.has('supervisor')) {
        ops.push({
          who: 'supervisor',
          name: 'observe incumbent exit',
          run: () => {
            feedSupervisor({ type: 'incumbentExited', reason: why });
            supervise('incumbent');
          },
        });
      }
    } else if (who === 'successor') {
      if (successorChannel?.open) {
        successorChannel.open = false;
        successorChannel.toDaemon.length = 0;
      }
      if (alive.has('supervisor')) {
        ops.push({
          who: 'supervisor',
          name: 'reap successor',
          run: () => {
            feedSupervisor({ type: 'successorGone', reason: why });
            supervise('successor');
          },
        });
      }
    }
  };

  // ---- supervisor -------------------------------------------------------------------
  const feedSupervisor = (event: SupervisorEvent): void => {
    if (!alive.has('supervisor')) return;
    const r = supervisorTransition(sup, event);
    if (r.state.phase !== sup.phase) log(`supervisor ${sup.phase} -> ${r.state.phase} on ${describeEvent(event)}`);
    if (r.violation) log(`supervisor violation: ${r.violation.message}`);
    sup = r.state;
    for (const effect of r.effects) runSupervisorEffect(effect);
  };
  const runSupervisorEffect = (effect: SupervisorEffect): void => {
    switch (effect.type) {
      case 'journal':
      case 'sealProgress':
        return;
      case 'spawnSuccessor': {
        successorChannel = newChannel();
        alive.add('successor');
        suc = initialSuccessorState({
          pid: pids.successor,
          buildId: 'v2',
          versions: faults.successorVersions ?? { min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX },
          capabilities: faults.successorNoRecovery ? capabilities('SealProgress') : ALL_CAPS,
          heartbeatMs: SIM_TIMEOUTS.heartbeatMs,
          livenessMs: SIM_TIMEOUTS.livenessMs,
        });
        ops.push({ who: 'successor', name: 'successor starts', run: () => { feedSuccessor({ type: 'start' }); } });
        feedSupervisor({ type: 'spawned', pid: pids.successor });
        return;
      }
      case 'sendToSuccessor':
        send(successorChannel, 'toDaemon', effect.message);
        return;
      case 'sendToIncumbent':
        send(control, 'toDaemon', effect.message);
        return;
      case 'stopSuccessor':
        ops.push({ who: 'supervisor', name: 'SIGKILL successor', run: () => { kill('successor', 'stopped by the supervisor'); } });
        return;
      case 'coldStart':
        alive.add('cold');
        ops.push({ who: 'cold', name: 'cold start takes the lock', run: coldStart });
        return;
      case 'finished':
        outcome = effect.outcome;
        log(`handoff finished: ${effect.outcome.kind}${effect.outcome.code ? ` (${effect.outcome.code})` : ''}`);
        return;
      case 'setTimer':
        setTimer('supervisor', effect.timer);
        return;
      case 'cancelTimer':
        cancelTimer('supervisor', effect.timer);
        return;
      default:
        assertNever(effect, 'effect');
    }
  };
  /**
   * Child supervision, outside the handoff machine: once the handoff is over, the death of
   * the daemon that the outcome made the server is a crash like any other, and the
   * supervisor starts a fresh daemon (which waits for the lock).
   */
  const supervise = (died: SimRole): void => {
    if (!outcome) return;
    const server: SimRole = outcome.committed ? 'successor' : outcome.kind === 'coldStart' ? 'cold' : 'incumbent';
    if (died === server && !alive.has('cold')) {
      log(`supervisor restarts the daemon: ${died} died after the handoff ended`);
      runSupervisorEffect({ type: 'coldStart', reason: `${died} died` });
    }
  };
  const coldStart = (): void => {
    if (lock === null) {
      lock = 'cold';
      views.cold = disk;
      coldServing = true;
      log('cold-started daemon holds the lock and serves');
    } else {
      ops.push({ who: 'cold', name: 'cold start takes the lock', run: coldStart });
    }
  };

  // ---- incumbent ----------------------------------------------------------------------
  const feedIncumbent = (event: IncumbentEvent): void => {
    if (!alive.has('incumbent')) return;
    const r = incumbentTransition(inc, event);
    if (r.state.phase !== inc.phase) log(`incumbent ${inc.phase} -> ${r.state.phase} on ${describeEvent(event)}`);
    if (r.violation) log(`incumbent violation: ${r.violation.message}`);
    inc = r.state;
    for (const effect of r.effects) runIncumbentEffect(effect);
  };
  const runIncumbentEffect = (effect: IncumbentEffect): void => {
    switch (effect.type) {
      case 'send':
        send(control, 'toSupervisor', effect.message);
        return;
      case 'closeSession':
        if (control.open) {
          closeEnd(control, 'daemon');
          ops.push({ who: 'supervisor', name: 'notice incumbent disconnect', run: () => { feedSupervisor({ type: 'incumbentDisconnected', reason: 'control session closed by the incumbent' }); } });
        }
        return;
      case 'startDrain':
        ops.push({
          who: 'incumbent',
          name: 'drain completes',
          run: () => { feedIncumbent(faults.drainFails ? { type: 'drainFailed', error: 'injected' } : { type: 'drainDone', openConnsRemaining: 0, acceptClosed: true }); },
        });
        return;
      case 'startSeal':
        ops.push({
          who: 'incumbent',
          name: 'seal completes',
          run: () => { feedIncumbent(faults.sealFails ? { type: 'sealFailed', error: 'injected' } : { type: 'sealDone', report: { revisions: [disk], fingerprint: `fp-${disk}` } }); },
        });
        return;
      case 'releaseLock':
        if (lock === 'incumbent') lock = null;
        feedIncumbent({ type: 'lockReleased' });
        return;
      case 'resume': {
        // The driver retries a held lock for a bounded time (a successor that took it may
        // still give it up), then reports resumeFailed.
        let attempts = 0;
        const attempt = (): void => {
          if (lock === 'incumbent' || (effect.reacquireLock && lock === null)) {
            lock = 'incumbent';
            views.incumbent = disk; // re-opens its writer
            feedIncumbent({ type: 'resumed' });
          } else if (lock !== null && ++attempts < RESUME_ATTEMPTS) {
            ops.push({ who: 'incumbent', name: 'resume retries the lock', run: attempt });
          } else {
            feedIncumbent({ type: 'resumeFailed', error: `lock held by ${String(lock)}`, lockTaken: lock !== null });
          }
        };
        ops.push({ who: 'incumbent', name: 'resume completes', run: attempt });
        return;
      }
      case 'exit':
        kill('incumbent', `exit ${effect.code}: ${effect.reason}`);
        return;
      case 'setTimer':
        setTimer('incumbent', effect.timer);
        return;
      case 'cancelTimer':
        cancelTimer('incumbent', effect.timer);
        return;
      default:
        assertNever(effect, 'effect');
    }
  };

  // ---- successor ----------------------------------------------------------------------
  const feedSuccessor = (event: SuccessorEvent): void => {
    if (!alive.has('successor') || !suc) return;
    const r = successorTransition(suc, event);
    if (r.state.phase !== suc.phase) log(`successor ${suc.phase} -> ${r.state.phase} on ${describeEvent(event)}`);
    if (r.violation) log(`successor violation: ${r.violation.message}`);
    suc = r.state;
    for (const effect of r.effects) runSuccessorEffect(effect);
  };
  const runSuccessorEffect = (effect: SuccessorEffect): void => {
    switch (effect.type) {
      case 'send':
        send(successorChannel, 'toSupervisor', effect.message);
        return;
      case 'closeSession':
        if (successorChannel?.open) closeEnd(successorChannel, 'daemon');
        return;
      case 'takeOver':
        ops.push({
          who: 'successor',
          name: 'takeover completes',
          run: () => {
            if (lock !== null) {
              feedSuccessor({ type: 'takeoverFailed', error: `lock held by ${lock}` });
              return;
            }
            lock = 'successor';
            views.successor = faults.successorStale && suc?.seal ? disk - 1 : disk;
            feedSuccessor({ type: 'takeoverDone', listeningOn: ['tcp:127.0.0.1:8080'], healthy: !faults.successorUnhealthy, revisions: [views.successor] });
          },
        });
        return;
      case 'becomeIncumbent':
        log(`successor becomes the incumbent${effect.promoted ? ' (promoted without a supervisor commit)' : ''}`);
        return;
      case 'exit':
        kill('successor', `exit ${effect.code}: ${effect.reason}`);
        return;
      case 'setTimer':
        setTimer('successor', effect.timer);
        return;
      case 'cancelTimer':
        cancelTimer('successor', effect.timer);
        return;
      default:
        assertNever(effect, 'effect');
    }
  };

  // ---- world ---------------------------------------------------------------------------
  const writers = (): SimRole[] => {
    const w: SimRole[] = [];
    if (alive.has('incumbent') && (inc.phase === 'serving' || inc.phase === 'draining')) w.push('incumbent');
    if (alive.has('successor') && suc && (suc.phase === 'ready' || suc.phase === 'committed')) w.push('successor');
    if (alive.has('cold') && coldServing) w.push('cold');
    return w;
  };
  /** Processes whose state machine believes it holds the lock (the incumbent while releasing is excluded: it is letting go). */
  const believedHolders = (): SimRole[] => {
    const h: SimRole[] = [];
    if (alive.has('incumbent') && inc.lockHeld && inc.phase !== 'releasing') h.push('incumbent');
    if (alive.has('successor') && suc?.lockHeld) h.push('successor');
    if (alive.has('cold') && coldServing) h.push('cold');
    return h;
  };
  const servers = (): SimRole[] => {
    const s: SimRole[] = [];
    if (alive.has('incumbent') && inc.phase === 'serving') s.push('incumbent');
    if (alive.has('successor') && suc?.phase === 'committed') s.push('successor');
    if (alive.has('cold') && coldServing) s.push('cold');
    return s;
  };

  type Action = { readonly label: string; readonly run: () => void; readonly background: boolean };
  const deliverFrom = (channel: Channel, direction: Direction, to: SimRole): Action | undefined => {
    const queue = direction === 'toDaemon' ? channel.toDaemon : channel.toSupervisor;
    if (queue.length === 0 || !alive.has(to)) return undefined;
    return {
      label: `deliver ${direction} to ${to}`,
      background: false,
      run: () => {
        const frame = queue.shift();
        if (frame === undefined) return;
        if (frame === null) {
          if (to === 'incumbent') feedIncumbent({ type: 'sessionClosed', reason: 'EOF' });
          else if (to === 'successor') feedSuccessor({ type: 'sessionClosed', reason: 'EOF' });
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
            log(`${to} <- ${message.type}`);
            if (to === 'incumbent') feedIncumbent({ type: 'message', message });
            else feedSuccessor({ type: 'message', message });
          } else {
            const message = result.message as ToSupervisorMessage;
            log(`supervisor <- ${message.type} from ${channel === control ? 'incumbent' : 'successor'}`);
            feedSupervisor(channel === control ? { type: 'incumbentMessage', message } : { type: 'successorMessage', message });
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
    add(deliverFrom(control, 'toSupervisor', 'supervisor'));
    add(deliverFrom(control, 'toDaemon', 'incumbent'));
    if (successorChannel) {
      add(deliverFrom(successorChannel, 'toSupervisor', 'supervisor'));
      add(deliverFrom(successorChannel, 'toDaemon', 'successor'));
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
    for (const t of timers) {
      if (!alive.has(t.who)) continue;
      actions.push({
        label: `${t.who} timer ${t.timer} fires`,
        background: t.timer === 'heartbeat',
        run: () => {
          cancelTimer(t.who, t.timer);
          const now = 1_000_000 + step;
          if (t.who === 'supervisor') feedSupervisor({ type: 'timeout', timer: t.timer as never, now });
          else if (t.who === 'incumbent') feedIncumbent({ type: 'timeout', timer: t.timer as never, now });
          else feedSuccessor({ type: 'timeout', timer: t.timer as never, now });
        },
      });
    }
    for (const w of writers()) {
      actions.push({
        label: `${w} acknowledges a write`,
        background: true,
        run: () => {
          if (lock !== w) problems.push(`${w} wrote without holding the lock (holder: ${String(lock)})`);
          if (views[w] !== disk) problems.push(`${w} wrote from revision ${views[w]} over durable revision ${disk}: acknowledged writes lost`);
          views[w] += 1;
          disk = views[w];
          acked = Math.max(acked, disk);
        },
      });
    }
    return actions;
  };

  // ---- run ----------------------------------------------------------------------------
  let step = 0;
  // The supervisor's session layer greets the incumbent before the handoff machine starts.
  feedIncumbent({ type: 'sessionOpened' });
  const hello = control.toSupervisor.shift();
  const greeting = hello ? control.supervisorDecoder.push(hello)[0] : undefined;
  if (!greeting?.ok || greeting.message.type !== 'Hello') problems.push('the incumbent did not open its session with Hello');
  send(control, 'toDaemon', { type: 'HelloAck', version: PROTOCOL_VERSION_MAX, handoffId: null, capabilities: ALL_CAPS });
  feedSupervisor({
    type: 'start',
    spec: { handoffId: 'h-1', timeouts: SIM_TIMEOUTS, capabilities: ALL_CAPS },
  });

  for (; step < maxSteps; step++) {
    if (options.crash && step === options.crash.atStep && outcome === null && alive.has(options.crash.role)) {
      crashed = options.crash.role;
      kill(options.crash.role, 'SIGKILL (injected)');
    }
    const actions = enabled();
    const foreground = actions.filter((a) => !a.background);
    const choice = choices[step];
    let action: Action | undefined;
    if (choice !== undefined && actions.length > 0) {
      action = actions[Math.abs(choice) % actions.length];
    } else {
      // Default order: a periodic write, then messages and hook completions, then timers.
      const write = options.writeEvery && step % options.writeEvery === 0 ? actions.find((a) => a.label.endsWith('acknowledges a write')) : undefined;
      action = write ?? foreground.find((a) => !a.label.includes('timer')) ?? foreground[0];
    }
    if (!action) break;
    action.run();
    const w = writers();
    for (const writer of w) {
      if (lock !== writer) problems.push(`step ${step}: ${writer} is in a writing state without holding the lock (holder: ${String(lock)})`);
    }
    if (w.length > 1) problems.push(`step ${step}: two writers at once: ${w.join(', ')}`);
    const holders = believedHolders();
    if (holders.length > 1) problems.push(`step ${step}: two processes believe they hold the lock: ${holders.join(', ')}`);
    for (const holder of holders) {
      if (lock !== holder) problems.push(`step ${step}: ${holder} believes it holds the lock, but ${String(lock)} does`);
    }
  }
  if (step >= maxSteps) problems.push(`no quiescence after ${maxSteps} steps`);

  const serving = servers().map((role) => ({ role, holdsLock: lock === role }));
  if (serving.length !== 1) problems.push(`expected exactly one serving daemon, found ${serving.length}: ${serving.map((s) => s.role).join(', ') || 'none'}`);
  for (const s of serving) if (!s.holdsLock) problems.push(`${s.role} serves without holding the lock`);
  if (disk < acked) problems.push(`acknowledged writes lost: acked ${acked}, durable ${disk}`);
  for (const s of serving) if (views[s.role] !== disk) problems.push(`${s.role} serves revision ${views[s.role]}, the data is at ${disk}`);
  if (crashed === null && outcome === null) problems.push('the handoff never finished though no process crashed');
  if (outcome?.committed && crashed === null && !serving.some((s) => s.role === 'successor')) {
    problems.push('the handoff committed but the successor does not serve');
  }
  return { outcome, serving, lockHolder: lock, acknowledgedWrites: acked, durableRevision: disk, crashed, steps: step, problems, trace };
}

function describeEvent(event: { readonly type: string; readonly message?: { readonly type: string }; readonly timer?: string }): string {
  if (event.message) return `${event.type}:${event.message.type}`;
  if (event.timer) return `${event.type}:${event.timer}`;
  return event.type;
}
