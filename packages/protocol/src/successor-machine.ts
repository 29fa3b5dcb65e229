/**
 * The successor's side of the protocol, as a pure state machine.
 *
 * Phases: `init` -> `awaitingAck` -> `awaitingBegin` -> `takingOver` -> `ready` -> `committed`
 * (it is now the incumbent). It exits on Abort, on any violation, and when the supervisor
 * goes away (EOF or silence) — unless it already holds the lock, in which case it is the
 * only possible writer and serves on (`committed`, promoted). See PROTOCOL.md,
 * "Successor phases".
 */
import { ErrorCode, HandoffProtocolError, ProtocolErrorCode, assertNever } from './errors.js';
import type { CoreErrorCode } from './errors.js';
import { helloFor } from './machine.js';
import type { CancelTimer, DaemonConfig, SetTimer, Transition } from './machine.js';
import type { ConnOffer, SealReport, ToDaemonMessage, ToSupervisorMessage } from './messages.js';
import { Capability } from './negotiation.js';
import { explainRevisionGap } from './revisions.js';

/** Phases of the successor machine. */
export type SuccessorPhase = 'init' | 'awaitingAck' | 'awaitingBegin' | 'takingOver' | 'ready' | 'committed' | 'exited';

/** Timers of the successor machine. */
export type SuccessorTimer = 'supervisorLiveness' | 'heartbeat';

/** What the successor says about itself. */
export type SuccessorConfig = DaemonConfig;

/** The successor machine's state. */
export interface SuccessorState {
  readonly phase: SuccessorPhase;
  readonly config: SuccessorConfig;
  readonly handoffId: string | null;
  readonly version: number | null;
  readonly capabilities: number;
  /** The supervisor went away during takeover: serve alone if the lock is ours, else exit. */
  readonly orphaned: boolean;
  /** The incumbent's seal report from Begin (null: recover from disk). */
  readonly seal: SealReport | null;
  readonly lockHeld: boolean;
  readonly reason: string | null;
  /** Once `exited`: why, as a code (aborted, the supervisor went away, a violation, ...). */
  readonly exitError: CoreErrorCode | null;
}

/** Events fed to the successor machine. */
export type SuccessorEvent =
  /** The process started with its channel to the supervisor. */
  | { readonly type: 'start' }
  | { readonly type: 'message'; readonly message: ToDaemonMessage }
  /** The channel to the supervisor ended (EOF, error or garbage). */
  | { readonly type: 'sessionClosed'; readonly reason: string }
  /** The user's takeover finished: lock taken, data open, listening. */
  | { readonly type: 'takeoverDone'; readonly listeningOn: readonly string[]; readonly healthy: boolean; readonly revisions: readonly number[] }
  /** The takeover failed; the lock is not held. */
  | { readonly type: 'takeoverFailed'; readonly error: string }
  | { readonly type: 'timeout'; readonly timer: SuccessorTimer; readonly now: number };

/** Effects the successor's driver carries out, in order. */
export type SuccessorEffect =
  | { readonly type: 'send'; readonly message: ToSupervisorMessage }
  | { readonly type: 'closeSession' }
  /**
   * Take the lock, open the data (continuing `seal`, or recovering from disk when null), listen;
   * before Ready, hold (dormant) all `conns` connections offered (PROTOCOL.md section 6, "Moving connections").
   */
  | { readonly type: 'takeOver'; readonly handoffId: string; readonly seal: SealReport | null; readonly state: Uint8Array | null; readonly conns: number }
  /** Keep an offered connection dormant: its descriptor arrives beside; it is served only after Commit. */
  | { readonly type: 'connOffered'; readonly offer: ConnOffer }
  /**
   * The successor is now the incumbent: bind the control socket and serve sessions. With
   * `adoptConnections` (a Commit) it serves the offered connections; serving alone (its
   * supervisor gone) it keeps them only if it holds the data directory's lock, which its
   * predecessor must re-take to resume them; otherwise it closes them.
   */
  | { readonly type: 'becomeIncumbent'; readonly handoffId: string; readonly promoted: boolean; readonly adoptConnections: boolean }
  | { readonly type: 'exit'; readonly code: number; readonly reason: string }
  | SetTimer<SuccessorTimer>
  | CancelTimer<SuccessorTimer>;

type Result = Transition<SuccessorState, SuccessorEffect>;

/** A fresh successor, before `start`. */
export function initialSuccessorState(config: SuccessorConfig): SuccessorState {
  return { phase: 'init', config, handoffId: null, version: null, capabilities: 0, orphaned: false, seal: null, lockHeld: false, reason: null, exitError: null };
}

const STOP_TIMERS: readonly SuccessorEffect[] = [
  { type: 'cancelTimer', timer: 'supervisorLiveness' },
  { type: 'cancelTimer', timer: 'heartbeat' },
];

function violation(state: SuccessorState, what: string): HandoffProtocolError {
  return new HandoffProtocolError(ProtocolErrorCode.ProtocolViolation, `${what} (successor in phase ${state.phase})`, { phase: state.phase });
}

function exit(state: SuccessorState, code: number, reason: string, why: CoreErrorCode): Result {
  return { state: { ...state, phase: 'exited', reason, exitError: why }, effects: [...STOP_TIMERS, { type: 'closeSession' }, { type: 'exit', code, reason }] };
}

function fail(state: SuccessorState, error: HandoffProtocolError): Result {
  return { ...exit(state, 1, error.message, ErrorCode.ProtocolViolation), violation: error };
}

function become(state: SuccessorState, promoted: boolean): Result {
  return {
    state: { ...state, phase: 'committed', orphaned: promoted || state.orphaned },
    effects: [...STOP_TIMERS, { type: 'becomeIncumbent', handoffId: state.handoffId ?? '', promoted, adoptConnections: !promoted }],
  };
}

/** The supervisor is gone (EOF or silence): serve on only if the lock is ours. */
function supervisorGone(state: SuccessorState, reason: string): Result {
  switch (state.phase) {
    case 'init':
    case 'awaitingAck':
    case 'awaitingBegin':
      return exit(state, 0, `the supervisor went away before Begin (${reason}); nothing was taken over`, ErrorCode.ChannelClosed);
    case 'takingOver':
      return { state: { ...state, orphaned: true, reason }, effects: [...STOP_TIMERS] };
    case 'ready':
      return become(state, true);
    case 'committed':
    case 'exited':
      return { state, effects: [] };
    default:
      return assertNever(state.phase, 'phase');
  }
}

function onMessage(state: SuccessorState, message: ToDaemonMessage): Result {
  const c = state.config;
  if (state.phase === 'committed' || state.phase === 'exited') return { state, effects: [] };
  if (state.phase === 'init') return fail(state, violation(state, `${message.type} before Hello`));
  if (state.orphaned) return { state, effects: [] };
  const liveness: SuccessorEffect = { type: 'setTimer', timer: 'supervisorLiveness', ms: c.livenessMs };
  if (message.type === 'HelloAck') {
    if (state.phase !== 'awaitingAck') return fail(state, violation(state, 'a second HelloAck'));
    if (message.version < c.versions.min || message.version > c.versions.max) {
      return fail(state, violation(state, `HelloAck chose version ${message.version}, outside ${c.versions.min}..${c.versions.max}`));
    }
    if (message.handoffId === null) return fail(state, violation(state, 'HelloAck without a handoff id'));
    return {
      state: { ...state, phase: 'awaitingBegin', handoffId: message.handoffId, version: message.version, capabilities: message.capabilities },
      effects: [liveness],
    };
  }
  if (state.phase === 'awaitingAck') {
    if (message.type === 'Abort') return exit(state, 0, `aborted by the supervisor: ${message.code}: ${message.reason}`, ErrorCode.Aborted);
    return fail(state, violation(state, `${message.type} before HelloAck`));
  }
  switch (message.type) {
    case 'Heartbeat':
      return { state, effects: [liveness] };
    case 'Begin':
      if (state.phase !== 'awaitingBegin' || message.handoffId !== state.handoffId) return fail(state, violation(state, `Begin for ${message.handoffId}`));
      return {
        state: { ...state, phase: 'takingOver', seal: message.seal },
        effects: [liveness, { type: 'takeOver', handoffId: message.handoffId, seal: message.seal, state: message.state, conns: message.conns }],
      };
    case 'ConnOffer':
      if (state.phase !== 'awaitingBegin' || message.handoffId !== state.handoffId || (state.capabilities & Capability.MoveConnections) === 0) {
        return fail(state, violation(state, `ConnOffer for ${message.handoffId}`));
      }
      return { state, effects: [liveness, { type: 'connOffered', offer: message }] };
    case 'Commit':
      if (state.phase !== 'ready' || message.handoffId !== state.handoffId) return fail(state, violation(state, `Commit for ${message.handoffId}`));
      return become(state, false);
    case 'Abort':
      return exit(state, 0, `aborted by the supervisor: ${message.code}: ${message.reason}`, ErrorCode.Aborted);
    case 'PrepareHandoff':
    case 'SealRequest':
    case 'ResumeAfterAbort':
    case 'SpawnHolder':
    case 'Reload':
      return fail(state, violation(state, `${message.type} is for incumbents`));
    default:
      return assertNever(message, 'message');
  }
}

/** The successor's transition function. Pure; never throws for any (state, event) pair. */
export function successorTransition(state: SuccessorState, event: SuccessorEvent): Result {
  const c = state.config;
  if (state.phase === 'committed' || state.phase === 'exited') return { state, effects: [] };
  switch (event.type) {
    case 'start':
      if (state.phase !== 'init') return fail(state, violation(state, 'start twice'));
      return {
        state: { ...state, phase: 'awaitingAck' },
        effects: [
          { type: 'send', message: helloFor(c, 'successor') },
          { type: 'setTimer', timer: 'supervisorLiveness', ms: c.livenessMs },
          { type: 'setTimer', timer: 'heartbeat', ms: c.heartbeatMs },
        ],
      };
    case 'message':
      return onMessage(state, event.message);
    case 'sessionClosed':
      return supervisorGone(state, event.reason);
    case 'takeoverDone': {
      if (state.phase !== 'takingOver') return fail(state, violation(state, 'takeoverDone without a takeover'));
      const held: SuccessorState = { ...state, lockHeld: true };
      const ready: SuccessorEffect = {
        type: 'send',
        message: { type: 'Ready', handoffId: state.handoffId ?? '', listeningOn: event.listeningOn, healthy: event.healthy, revisions: event.revisions },
      };
      const gap = state.seal ? explainRevisionGap(state.seal.revisions, event.revisions) : undefined;
      if (gap !== undefined) {
        // Never serve data that does not continue the sealed data, even without a supervisor
        // to check Ready: tell it (so it reports the precise reason) and exit at once.
        const r = exit(held, 1, `refusing to serve: ${gap}`, ErrorCode.RevisionsDiverged);
        return { state: r.state, effects: state.orphaned ? r.effects : [ready, ...r.effects] };
      }
      if (state.orphaned) {
        if (!event.healthy) return exit(held, 1, 'the supervisor went away and this successor is unhealthy', ErrorCode.Unhealthy);
        return become(held, true);
      }
      return { state: { ...held, phase: 'ready' }, effects: [ready] };
    }
    case 'takeoverFailed':
      if (state.phase !== 'takingOver') return fail(state, violation(state, 'takeoverFailed without a takeover'));
      return exit(state, 1, `takeover failed: ${event.error}`, ErrorCode.TakeoverFailed);
    case 'timeout':
      switch (event.timer) {
        case 'heartbeat':
          if (state.phase === 'init' || state.orphaned) return { state, effects: [] };
          return {
            state,
            effects: [
              { type: 'send', message: { type: 'Heartbeat', ts: Math.max(0, Math.floor(event.now)) } },
              { type: 'setTimer', timer: 'heartbeat', ms: c.heartbeatMs },
            ],
          };
        case 'supervisorLiveness': {
          if (state.phase === 'init' || state.orphaned) return { state, effects: [] };
          const r = supervisorGone(state, `the supervisor sent nothing for ${c.livenessMs} ms`);
          return r.state.phase === 'exited' ? r : { state: r.state, effects: [{ type: 'closeSession' }, ...r.effects] };
        }
        default:
          return assertNever(event.timer, 'timer');
      }
    default:
      return assertNever(event, 'event');
  }
}
