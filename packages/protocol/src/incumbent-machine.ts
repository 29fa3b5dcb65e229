/**
 * The incumbent's side of the protocol, as a pure state machine. It lives as long as the
 * daemon serves, across supervisor sessions and handoffs.
 *
 * Phases: `serving` -> `draining` -> `drained` -> `sealing` -> `releasing` -> `sealed`
 * -> `committed` (exit). From any phase between `draining` and `sealed`, an abort, the
 * supervisor's EOF or its silence past the liveness timeout leads to `resuming` -> `serving`
 * (or `exited` when the lock was taken by the successor meanwhile). See PROTOCOL.md,
 * "Incumbent phases".
 */
import { HandoffProtocolError, ProtocolErrorCode, assertNever } from './errors.js';
import { helloFor } from './machine.js';
import type { CancelTimer, DaemonConfig, SetTimer, Transition } from './machine.js';
import type { ConnOffer, DrainProgress, Reload, SealReport, ToDaemonMessage, ToSupervisorMessage } from './messages.js';
import { Capability } from './negotiation.js';

/** Phases of the incumbent machine. */
export type IncumbentPhase = 'serving' | 'draining' | 'drained' | 'sealing' | 'releasing' | 'sealed' | 'resuming' | 'committed' | 'exited';

/** The control session with a supervisor: none, Hello sent, or acknowledged. */
export type SessionState = 'none' | 'hello' | 'established';

/** Timers of the incumbent machine. */
export type IncumbentTimer = 'supervisorLiveness' | 'heartbeat';

/** What the incumbent says about itself. */
export type IncumbentConfig = DaemonConfig;

/** The incumbent machine's state. */
export interface IncumbentState {
  readonly phase: IncumbentPhase;
  readonly session: SessionState;
  readonly config: IncumbentConfig;
  /** The handoff in progress. */
  readonly handoffId: string | null;
  /** Whether this process holds the data-directory lock (as far as the machine knows). */
  readonly lockHeld: boolean;
  /** The seal report, between seal and release. */
  readonly seal: SealReport | null;
  /** The application state the seal returned for the successor (SealComplete's `state`), between seal and release. */
  readonly handover: Uint8Array | null;
  /** Why the last handoff was abandoned, or why the daemon exits. */
  readonly reason: string | null;
  /** The capabilities in force on the current session (its HelloAck's, within this daemon's own); 0 before HelloAck. */
  readonly agreed: number;
  /** The drain in progress offers idle connections to the successor (PrepareHandoff's `moveConns`, `MoveConnections` in force). */
  readonly moving: boolean;
}

/** Events fed to the incumbent machine. */
export type IncumbentEvent =
  /** A supervisor connected to the control socket (any previous session is closed by the driver). */
  | { readonly type: 'sessionOpened' }
  /** The control session ended (EOF, error, or garbage on it). */
  | { readonly type: 'sessionClosed'; readonly reason: string }
  | { readonly type: 'message'; readonly message: ToDaemonMessage }
  | { readonly type: 'drainDone'; readonly openConnsRemaining: number; readonly acceptClosed: boolean; readonly workCut?: number; readonly connsOffered?: number }
  /** The drain offers an idle connection to the successor; its descriptor was passed beside already (see {@link canOfferConnections}). */
  | { readonly type: 'connOffer'; readonly offer: Omit<ConnOffer, 'type' | 'handoffId'> }
  | { readonly type: 'drainFailed'; readonly error: string }
  | { readonly type: 'sealProgress'; readonly completed: number; readonly total: number }
  /** What a running drain still waits for; sent as DrainProgress when that capability is in force. */
  | { readonly type: 'drainProgress'; readonly progress: Omit<DrainProgress, 'type' | 'handoffId'> }
  | { readonly type: 'sealDone'; readonly report: SealReport; readonly state?: Uint8Array | null }
  | { readonly type: 'sealFailed'; readonly error: string }
  | { readonly type: 'lockReleased' }
  | { readonly type: 'resumed' }
  /** Resume failed; `lockTaken` when another process (the successor) holds the lock. */
  | { readonly type: 'resumeFailed'; readonly error: string; readonly lockTaken: boolean }
  | { readonly type: 'timeout'; readonly timer: IncumbentTimer; readonly now: number };

/** Effects the incumbent's driver carries out, in order. */
export type IncumbentEffect =
  | { readonly type: 'send'; readonly message: ToSupervisorMessage }
  | { readonly type: 'closeSession' }
  /**
   * Call the user's drain(deadline, signal): stop accepting, finish in-flight work, fsync;
   * with `cutWork`, cut tracked long-lived work at once instead of waiting for it; with
   * `moveConns`, offer idle connections to the successor instead of closing them.
   */
  | { readonly type: 'startDrain'; readonly handoffId: string; readonly deadlineMs: number; readonly drainGraceMs: number; readonly cutWork: boolean; readonly moveConns: boolean }
  /** Call the user's seal(). */
  | { readonly type: 'startSeal'; readonly handoffId: string }
  /** Release the data-directory lock; then feed `lockReleased`. */
  | { readonly type: 'releaseLock' }
  /**
   * Abort any running drain or seal and wait for it, re-take the lock if `reacquireLock`,
   * call the user's resumeAfterAbort() and accept again; then feed `resumed` or `resumeFailed`.
   */
  | { readonly type: 'resume'; readonly reacquireLock: boolean; readonly reason: string }
  /** Stop serving and exit the process with `code`. */
  | { readonly type: 'exit'; readonly code: number; readonly reason: string }
  /**
   * Start `argv` as a detached child with this process's listeners inherited (PROTOCOL.md
   * section 6, "Listener holder"), then send HolderSpawned with its pid or the error.
   */
  | { readonly type: 'spawnHolder'; readonly argv: readonly string[]; readonly cwd: string; readonly env: readonly string[] }
  /**
   * Reload a plugin or the configuration in place (PROTOCOL.md section 6, "Reload"): send
   * ReloadProgress as it goes and ReloadDone at the end, on whatever session is open then.
   */
  | { readonly type: 'reload'; readonly request: Reload }
  | SetTimer<IncumbentTimer>
  | CancelTimer<IncumbentTimer>;

type Result = Transition<IncumbentState, IncumbentEffect>;

/** A serving incumbent holding its lock, with no supervisor session yet. */
export function initialIncumbentState(config: IncumbentConfig): IncumbentState {
  return { phase: 'serving', session: 'none', config, handoffId: null, lockHeld: true, seal: null, handover: null, reason: null, agreed: 0, moving: false };
}

/**
 * Whether a `connOffer` fed now would be sent: the drain of a handoff that moves connections
 * runs on the session that asked for it. A connection that cannot be offered stays with the
 * incumbent (it drains as usual).
 */
export function canOfferConnections(state: IncumbentState): boolean {
  return state.phase === 'draining' && state.moving && state.session === 'established' && (state.agreed & Capability.MoveConnections) !== 0;
}

const HANDOFF_PHASES: readonly IncumbentPhase[] = ['draining', 'drained', 'sealing', 'releasing', 'sealed'];

function violation(state: IncumbentState, what: string): HandoffProtocolError {
  return new HandoffProtocolError(ProtocolErrorCode.ProtocolViolation, `${what} (incumbent in phase ${state.phase}, session ${state.session})`, {
    phase: state.phase,
    session: state.session,
  });
}

/** Starts resuming; the lock is re-taken when this process released it. */
function resume(state: IncumbentState, reason: string, extra: IncumbentEffect[] = []): Result {
  return {
    state: { ...state, phase: 'resuming', reason },
    effects: [
      ...extra,
      { type: 'cancelTimer', timer: 'supervisorLiveness' },
      { type: 'cancelTimer', timer: 'heartbeat' },
      { type: 'resume', reacquireLock: !state.lockHeld || state.phase === 'releasing', reason },
    ],
  };
}

/** The session broke the protocol: end it, and resume if a handoff was in progress. */
function endSession(state: IncumbentState, error: HandoffProtocolError): Result {
  const closed: IncumbentState = { ...state, session: 'none', agreed: 0 };
  if (HANDOFF_PHASES.includes(state.phase)) {
    return { ...resume(closed, `protocol violation: ${error.message}`, [{ type: 'closeSession' }]), violation: error };
  }
  return { state: closed, effects: [{ type: 'closeSession' }], violation: error };
}

function hello(state: IncumbentState): IncumbentEffect {
  return { type: 'send', message: helloFor(state.config, 'incumbent') };
}

function onMessage(state: IncumbentState, message: ToDaemonMessage): Result {
  const c = state.config;
  const inHandoff = HANDOFF_PHASES.includes(state.phase);
  if (state.phase === 'committed' || state.phase === 'exited') return { state, effects: [] };
  if (state.session === 'none') return endSession(state, violation(state, `${message.type} with no session`));
  if (message.type === 'HelloAck') {
    if (state.session !== 'hello') return endSession(state, violation(state, 'a second HelloAck'));
    if (message.version < c.versions.min || message.version > c.versions.max) {
      return endSession(state, violation(state, `HelloAck chose version ${message.version}, outside ${c.versions.min}..${c.versions.max}`));
    }
    return { state: { ...state, session: 'established', agreed: (message.capabilities & c.capabilities) >>> 0 }, effects: [] };
  }
  if (state.session !== 'established') return endSession(state, violation(state, `${message.type} before HelloAck`));
  const liveness: IncumbentEffect[] = inHandoff ? [{ type: 'setTimer', timer: 'supervisorLiveness', ms: c.livenessMs }] : [];
  const sameHandoff = 'handoffId' in message && message.handoffId === state.handoffId;
  switch (message.type) {
    case 'Heartbeat':
      return { state, effects: liveness };
    case 'PrepareHandoff':
      if (state.phase !== 'serving') return endSession(state, violation(state, 'PrepareHandoff while a handoff is in progress'));
      {
      const moving = message.moveConns && (state.agreed & Capability.MoveConnections) !== 0;
      return {
        state: { ...state, phase: 'draining', handoffId: message.handoffId, reason: null, seal: null, handover: null, moving },
        effects: [
          { type: 'setTimer', timer: 'supervisorLiveness', ms: c.livenessMs },
          { type: 'setTimer', timer: 'heartbeat', ms: c.heartbeatMs },
          { type: 'startDrain', handoffId: message.handoffId, deadlineMs: message.deadlineMs, drainGraceMs: message.drainGraceMs, cutWork: message.cutWork, moveConns: moving },
        ],
      };
      }
    case 'SealRequest':
      if (state.phase !== 'drained' || !sameHandoff) return endSession(state, violation(state, `SealRequest for ${message.handoffId}`));
      return { state: { ...state, phase: 'sealing' }, effects: [...liveness, { type: 'startSeal', handoffId: message.handoffId }] };
    case 'Commit':
      if (state.phase !== 'sealed' || !sameHandoff) return endSession(state, violation(state, `Commit for ${message.handoffId}`));
      return {
        state: { ...state, phase: 'committed', reason: 'committed: the successor serves' },
        effects: [
          { type: 'cancelTimer', timer: 'supervisorLiveness' },
          { type: 'cancelTimer', timer: 'heartbeat' },
          { type: 'exit', code: 0, reason: `handoff ${message.handoffId} committed; the successor serves` },
        ],
      };
    case 'Abort':
    case 'ResumeAfterAbort':
      // Idempotent: resuming, or already serving after resuming on our own.
      if (!inHandoff) return { state, effects: [] };
      if (message.handoffId !== null && message.handoffId !== state.handoffId) {
        return endSession(state, violation(state, `${message.type} for another handoff (${message.handoffId})`));
      }
      return resume(state, `${message.type}: ${message.reason}`);
    case 'Begin':
      return endSession(state, violation(state, 'Begin is for successors'));
    case 'ConnOffer':
      return endSession(state, violation(state, 'ConnOffer is for successors'));
    case 'SpawnHolder':
      if ((c.capabilities & Capability.SpawnHolder) === 0) return endSession(state, violation(state, 'SpawnHolder, and this daemon did not announce the SpawnHolder capability'));
      // Only between handoffs: a holder started mid-handoff could inherit listeners this process is closing.
      if (state.phase !== 'serving') {
        return { state, effects: [...liveness, { type: 'send', message: { type: 'HolderSpawned', pid: null, error: `a handoff is in progress (phase ${state.phase}); ask again once it ends` } }] };
      }
      return { state, effects: [{ type: 'spawnHolder', argv: message.argv, cwd: message.cwd, env: message.env }] };
    case 'Reload':
      if ((state.agreed & Capability.Reload) === 0) return endSession(state, violation(state, 'Reload on a session where the Reload capability is not in force (this daemon or its supervisor did not announce it)'));
      // Not during a handoff: the data and the listeners are changing hands; the successor loads the plugins' files anyway.
      if (state.phase !== 'serving') {
        return {
          state,
          effects: [...liveness, { type: 'send', message: { type: 'ReloadDone', requestId: message.requestId, outcome: 'refused', version: '', error: `a handoff is in progress (phase ${state.phase}); reload once it ends`, durationMs: 0, cutCalls: 0 } }],
        };
      }
      return { state, effects: [{ type: 'reload', request: message }] };
    default:
      return assertNever(message, 'message');
  }
}

/** The incumbent's transition function. Pure; never throws for any (state, event) pair. */
export function incumbentTransition(state: IncumbentState, event: IncumbentEvent): Result {
  const c = state.config;
  if (state.phase === 'committed' || state.phase === 'exited') return { state, effects: [] };
  const inHandoff = HANDOFF_PHASES.includes(state.phase);
  switch (event.type) {
    case 'sessionOpened': {
      const fresh: IncumbentState = { ...state, session: 'hello', agreed: 0 };
      if (inHandoff) {
        // The supervisor that drove this handoff is gone: resume, then greet the new one.
        const r = resume(fresh, 'a new supervisor session replaced the one driving the handoff');
        return { state: r.state, effects: [...r.effects, hello(fresh)] };
      }
      return { state: fresh, effects: [hello(fresh)] };
    }
    case 'sessionClosed': {
      const closed: IncumbentState = { ...state, session: 'none', agreed: 0 };
      if (inHandoff) return resume(closed, `supervisor session ended: ${event.reason}`);
      return { state: closed, effects: [] };
    }
    case 'message':
      return onMessage(state, event.message);
    case 'drainDone':
      if (state.phase !== 'draining') return { state, effects: [] };
      return {
        state: { ...state, phase: 'drained' },
        effects: [
          {
            type: 'send',
            message: { type: 'Drained', handoffId: state.handoffId ?? '', openConnsRemaining: event.openConnsRemaining, acceptClosed: event.acceptClosed, workCut: event.workCut ?? 0, connsOffered: event.connsOffered ?? 0 },
          },
        ],
      };
    case 'drainFailed':
      if (state.phase !== 'draining') return { state, effects: [] };
      return resume(state, `drain failed: ${event.error}`, [
        { type: 'send', message: { type: 'SealFailed', handoffId: state.handoffId ?? '', error: `drain failed: ${event.error}` } },
      ]);
    case 'connOffer':
      // The driver asks canOfferConnections first; an offer that cannot go is never sent.
      if (!canOfferConnections(state)) return { state, effects: [] };
      return { state, effects: [{ type: 'send', message: { type: 'ConnOffer', handoffId: state.handoffId ?? '', ...event.offer } }] };
    case 'drainProgress':
      // Only where the supervisor agreed to hear it; a progress report is never worth a session.
      if (state.phase !== 'draining' || state.session !== 'established' || (state.agreed & Capability.DrainProgress) === 0) return { state, effects: [] };
      return { state, effects: [{ type: 'send', message: { type: 'DrainProgress', handoffId: state.handoffId ?? '', ...event.progress } }] };
    case 'sealProgress':
      if (state.phase !== 'sealing') return { state, effects: [] };
      return {
        state,
        effects: [{ type: 'send', message: { type: 'SealProgress', handoffId: state.handoffId ?? '', completed: Math.min(event.completed, event.total), total: event.total } }],
      };
    case 'sealDone':
      if (state.phase !== 'sealing') return { state, effects: [] };
      return { state: { ...state, phase: 'releasing', seal: event.report, handover: event.state ?? null }, effects: [{ type: 'releaseLock' }] };
    case 'sealFailed':
      if (state.phase !== 'sealing') return { state, effects: [] };
      return resume(state, `seal failed: ${event.error}`, [
        { type: 'send', message: { type: 'SealFailed', handoffId: state.handoffId ?? '', error: event.error } },
      ]);
    case 'lockReleased': {
      if (state.phase !== 'releasing') return { state, effects: [] };
      const seal = state.seal ?? { revisions: [], fingerprint: '' };
      return {
        state: { ...state, phase: 'sealed', lockHeld: false },
        effects: [{ type: 'send', message: { type: 'SealComplete', handoffId: state.handoffId ?? '', revisions: seal.revisions, fingerprint: seal.fingerprint, state: state.handover } }],
      };
    }
    case 'resumed':
      if (state.phase !== 'resuming') return { state, effects: [] };
      return { state: { ...state, phase: 'serving', lockHeld: true, handoffId: null, seal: null, handover: null }, effects: [] };
    case 'resumeFailed':
      if (state.phase !== 'resuming') return { state, effects: [] };
      return {
        state: { ...state, phase: 'exited', lockHeld: false, reason: event.error },
        effects: [
          { type: 'closeSession' },
          event.lockTaken
            ? { type: 'exit', code: 0, reason: `the successor holds the lock and serves; this incumbent exits (${event.error})` }
            : { type: 'exit', code: 1, reason: `could not resume after an aborted handoff: ${event.error}` },
        ],
      };
    case 'timeout':
      switch (event.timer) {
        case 'heartbeat':
          if (!inHandoff || state.session !== 'established') return { state, effects: [] };
          return {
            state,
            effects: [
              { type: 'send', message: { type: 'Heartbeat', ts: Math.max(0, Math.floor(event.now)) } },
              { type: 'setTimer', timer: 'heartbeat', ms: c.heartbeatMs },
            ],
          };
        case 'supervisorLiveness':
          if (!inHandoff) return { state, effects: [] };
          return resume({ ...state, session: 'none', agreed: 0 }, `the supervisor sent nothing for ${c.livenessMs} ms`, [{ type: 'closeSession' }]);
        default:
          return assertNever(event.timer, 'timer');
      }
    default:
      return assertNever(event, 'event');
  }
}
