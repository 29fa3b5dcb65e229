/**
 * The supervisor's side of one handoff, as a pure state machine.
 *
 * Phases: `idle` -> `spawning` -> `awaitingHello` -> `preparing` -> `sealing` -> `beginning`
 * -> `committed`, with `aborting` -> `rolledBack` | `failed` on any failure before the commit
 * point (a valid Ready). `committed`, `rolledBack` and `failed` are final: every event there
 * is ignored. With `Overlap` in force (a daemon without a data directory) the order is
 * `awaitingHello` -> `beginning` -> `committed`: the successor accepts next to the incumbent,
 * which is stopped only after the commit point. See PROTOCOL.md, "Supervisor phases".
 */
import { AbortCode, HandoffProtocolError, ProtocolErrorCode, assertNever } from './errors.js';
import type { CancelTimer, SetTimer, Timeouts, Transition } from './machine.js';
import type { DrainProgress, Hello, SealReport, ToDaemonMessage, ToSupervisorMessage } from './messages.js';
import { PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN } from './messages.js';
import { commonCapabilities, hasCapability, negotiateVersion } from './negotiation.js';
import type { VersionRange } from './negotiation.js';
import { explainRevisionGap } from './revisions.js';
import type { JournalPhase } from './journal.js';

/** Phases of the supervisor's handoff machine. */
export type SupervisorPhase =
  | 'idle'
  | 'spawning'
  | 'awaitingHello'
  | 'preparing'
  | 'sealing'
  | 'beginning'
  | 'aborting'
  | 'committed'
  | 'rolledBack'
  | 'failed';

/** Phases in which the machine is finished. */
export const SUPERVISOR_FINAL_PHASES: readonly SupervisorPhase[] = ['committed', 'rolledBack', 'failed'];

/** Timers of the supervisor machine. */
export type SupervisorTimer = 'phase' | 'total' | 'incumbentLiveness' | 'successorLiveness' | 'heartbeat';

/** What a handoff is asked to do. */
export interface HandoffSpec {
  readonly handoffId: string;
  readonly timeouts: Timeouts;
  /** Versions the supervisor speaks. Default this package's range. */
  readonly versions?: VersionRange;
  /** Capabilities the supervisor offers (`Overlap` only when it configures no data directory). */
  readonly capabilities: number;
  /** Ask the incumbent to cut its tracked long-lived work at once instead of waiting for it (PrepareHandoff's `cutWork`). */
  readonly cutWork?: boolean;
  /**
   * The incumbent's session has `MoveConnections` in force and the supervisor can take
   * descriptors from it: idle connections move when the successor agrees too (PrepareHandoff's `moveConns`).
   */
  readonly moveConnections?: boolean;
}

/** How a handoff ended. */
export type OutcomeKind =
  /** The successor serves; the incumbent exits. */
  | 'committed'
  /** The incumbent died mid-handoff; the successor recovered from disk and serves. */
  | 'promoted'
  /** The handoff was abandoned; the incumbent serves on. */
  | 'rolledBack'
  /** The incumbent died and no successor could take over: a fresh daemon is cold-started. */
  | 'coldStart';

/** The result of a finished handoff. */
export interface HandoffOutcome {
  readonly kind: OutcomeKind;
  readonly committed: boolean;
  readonly handoffId: string;
  readonly code: AbortCode | null;
  readonly reason: string | null;
}

/** The supervisor machine's state. */
export interface SupervisorState {
  readonly phase: SupervisorPhase;
  readonly spec: HandoffSpec | null;
  /** Pid of the spawned successor, once spawned. */
  readonly successorPid: number | null;
  /** True from `spawned` until `successorGone`. */
  readonly successorRunning: boolean;
  /** True once the successor's Hello was acknowledged. */
  readonly successorGreeted: boolean;
  /** The version negotiated with the successor. */
  readonly version: number | null;
  /** Capabilities in force with the successor. */
  readonly capabilities: number;
  /** `Overlap` is in force: the successor serves beside the incumbent; no drain, no seal before the commit point. */
  readonly overlap: boolean;
  readonly incumbentAlive: boolean;
  readonly incumbentConnected: boolean;
  /** True once PrepareHandoff was sent. */
  readonly incumbentPrepared: boolean;
  /** True once Begin was sent: the successor may hold the lock. */
  readonly beginSent: boolean;
  readonly seal: SealReport | null;
  /** The incumbent's application state from SealComplete, forwarded byte for byte in Begin. */
  readonly handover: Uint8Array | null;
  /** What the incumbent's Drained reported: client connections closed unfinished, tracked work cut. */
  readonly drained: { readonly openConnsRemaining: number; readonly workCut: number; readonly connsOffered: number } | null;
  /** PrepareHandoff asked the incumbent to offer its idle connections (`moveConns`). */
  readonly moving: boolean;
  /** ConnOffers forwarded to the successor; Begin's `conns`. */
  readonly connsForwarded: number;
  /** The abort in progress or done. */
  readonly abort: { readonly code: AbortCode; readonly reason: string } | null;
  /** In `aborting`: ResumeAfterAbort is owed to the incumbent once the successor is gone. */
  readonly resumePending: boolean;
  readonly outcome: HandoffOutcome | null;
}

/** Events fed to the supervisor machine. */
export type SupervisorEvent =
  | { readonly type: 'start'; readonly spec: HandoffSpec }
  | { readonly type: 'spawned'; readonly pid: number }
  | { readonly type: 'spawnFailed'; readonly error: string }
  | { readonly type: 'successorMessage'; readonly message: ToSupervisorMessage }
  | { readonly type: 'incumbentMessage'; readonly message: ToSupervisorMessage }
  /** The successor's channel closed or sent garbage, and its process has been reaped. */
  | { readonly type: 'successorGone'; readonly reason: string }
  /** The incumbent's process is dead. */
  | { readonly type: 'incumbentExited'; readonly reason: string }
  /** The incumbent's control session ended (or it sent garbage) while its process lives. */
  | { readonly type: 'incumbentDisconnected'; readonly reason: string }
  | { readonly type: 'timeout'; readonly timer: SupervisorTimer; readonly now: number }
  | { readonly type: 'cancel'; readonly reason: string };

/** Effects the supervisor's driver carries out, in order. */
export type SupervisorEffect =
  /** Write the journal (temp file, fsync, rename, fsync dir) before doing anything after it. */
  | { readonly type: 'journal'; readonly phase: JournalPhase; readonly seal: SealReport | null }
  | { readonly type: 'spawnSuccessor'; readonly handoffId: string }
  | { readonly type: 'sendToSuccessor'; readonly message: ToDaemonMessage }
  | { readonly type: 'sendToIncumbent'; readonly message: ToDaemonMessage }
  /** SIGTERM, SIGKILL after `graceMs`, reap; then feed `successorGone`. */
  | { readonly type: 'stopSuccessor'; readonly graceMs: number }
  /**
   * With `Overlap`, after the commit point: stop the old incumbent as an operator's stop does
   * (SIGTERM: it stops accepting, finishes in-flight work and exits 0), SIGKILL after `graceMs`.
   */
  | { readonly type: 'stopIncumbent'; readonly graceMs: number }
  | { readonly type: 'coldStart'; readonly reason: string }
  | { readonly type: 'sealProgress'; readonly completed: number; readonly total: number }
  /** What the draining incumbent still waits for (its DrainProgress), for the operator. */
  | { readonly type: 'drainProgress'; readonly progress: Omit<DrainProgress, 'type' | 'handoffId'> }
  | { readonly type: 'finished'; readonly outcome: HandoffOutcome }
  | SetTimer<SupervisorTimer>
  | CancelTimer<SupervisorTimer>;

type Result = Transition<SupervisorState, SupervisorEffect>;

/** A fresh machine, before `start`. */
export function initialSupervisorState(): SupervisorState {
  return {
    phase: 'idle',
    spec: null,
    successorPid: null,
    successorRunning: false,
    successorGreeted: false,
    version: null,
    capabilities: 0,
    overlap: false,
    incumbentAlive: true,
    incumbentConnected: true,
    incumbentPrepared: false,
    beginSent: false,
    seal: null,
    handover: null,
    drained: null,
    moving: false,
    connsForwarded: 0,
    abort: null,
    resumePending: false,
    outcome: null,
  };
}

const ACTIVE_TIMERS: readonly SupervisorTimer[] = ['phase', 'total', 'incumbentLiveness', 'successorLiveness', 'heartbeat'];

function violation(state: SupervisorState, what: string): HandoffProtocolError {
  return new HandoffProtocolError(ProtocolErrorCode.ProtocolViolation, `${what} (supervisor in phase ${state.phase})`, { phase: state.phase });
}

function spec(state: SupervisorState): HandoffSpec {
  if (!state.spec) throw violation(state, 'no handoff spec; the machine was not started');
  return state.spec;
}

function id(state: SupervisorState): string {
  return spec(state).handoffId;
}

function cancelAll(): SupervisorEffect[] {
  return ACTIVE_TIMERS.map((timer) => ({ type: 'cancelTimer', timer }));
}

function finish(state: SupervisorState, kind: OutcomeKind, extra: SupervisorEffect[] = []): Result {
  const outcome: HandoffOutcome = {
    kind,
    committed: kind === 'committed' || kind === 'promoted',
    handoffId: id(state),
    code: state.abort?.code ?? null,
    reason: state.abort?.reason ?? null,
  };
  const phase: SupervisorPhase = outcome.committed ? 'committed' : kind === 'coldStart' ? 'failed' : 'rolledBack';
  return {
    state: { ...state, phase, outcome, resumePending: false },
    effects: [...cancelAll(), ...extra, { type: 'journal', phase: 'idle', seal: null }, { type: 'finished', outcome }],
  };
}

/** Ends the handoff unsuccessfully, once the successor is gone. */
function settle(state: SupervisorState): Result {
  if (!state.incumbentAlive) {
    return finish(state, 'coldStart', [{ type: 'coldStart', reason: state.abort?.reason ?? 'incumbent died during the handoff' }]);
  }
  const resume: SupervisorEffect[] =
    state.resumePending && state.incumbentConnected
      ? [{ type: 'sendToIncumbent', message: { type: 'ResumeAfterAbort', handoffId: id(state), reason: state.abort?.reason ?? '' } }]
      : [];
  return finish(state, 'rolledBack', resume);
}

/**
 * Abandons the handoff. The incumbent is told to resume at once unless the successor may hold
 * the lock (Begin sent): then it is told only after the successor is gone.
 */
function abort(state: SupervisorState, code: AbortCode, reason: string): Result {
  const s = spec(state);
  const next: SupervisorState = { ...state, phase: 'aborting', abort: { code, reason } };
  const effects: SupervisorEffect[] = [
    { type: 'cancelTimer', timer: 'incumbentLiveness' },
    { type: 'cancelTimer', timer: 'successorLiveness' },
    { type: 'journal', phase: 'aborting', seal: state.seal },
  ];
  const resumeNow = state.incumbentPrepared && state.incumbentAlive && state.incumbentConnected && !state.beginSent;
  if (resumeNow) effects.push({ type: 'sendToIncumbent', message: { type: 'ResumeAfterAbort', handoffId: s.handoffId, reason } });
  const resumeLater = state.incumbentPrepared && state.beginSent;
  if (!state.successorRunning) {
    const r = settle({ ...next, resumePending: resumeLater });
    return { state: r.state, effects: [...effects, ...r.effects] };
  }
  if (state.successorGreeted) effects.push({ type: 'sendToSuccessor', message: { type: 'Abort', handoffId: s.handoffId, code, reason } });
  effects.push(
    { type: 'stopSuccessor', graceMs: s.timeouts.stopGraceMs },
    // A safety net: the driver reports successorGone after SIGKILL; if it never does, go on.
    { type: 'setTimer', timer: 'phase', ms: s.timeouts.stopGraceMs * 2 + s.timeouts.livenessMs },
  );
  return { state: { ...next, resumePending: resumeLater }, effects };
}

function abortForViolation(state: SupervisorState, error: HandoffProtocolError): Result {
  const r = abort(state, AbortCode.ProtocolViolation, error.message);
  return { ...r, violation: error };
}

/**
 * Sends Begin; with no seal the successor recovers from disk (the incumbent died). `handover`
 * is the incumbent's application state from its SealComplete (none without a seal).
 */
function begin(state: SupervisorState, seal: SealReport | null, handover: Uint8Array | null = null): Result {
  const s = spec(state);
  if (seal === null && !state.overlap && !hasCapability(state.capabilities, 'RecoverFromDisk')) {
    return abort(state, AbortCode.NoRecovery, 'the incumbent died and the successor cannot recover from disk (no RecoverFromDisk capability)');
  }
  return {
    state: { ...state, phase: 'beginning', seal, handover, beginSent: true },
    effects: [
      { type: 'journal', phase: 'beginning', seal },
      { type: 'sendToSuccessor', message: { type: 'Begin', handoffId: s.handoffId, seal, state: handover, conns: state.connsForwarded } },
      { type: 'setTimer', timer: 'phase', ms: s.timeouts.readyMs },
      { type: 'cancelTimer', timer: 'incumbentLiveness' },
    ],
  };
}

function onHello(state: SupervisorState, hello: Hello): Result {
  const s = spec(state);
  if (hello.role !== 'successor') return abortForViolation(state, violation(state, `successor said Hello with role ${hello.role}`));
  if (hello.pid !== state.successorPid) {
    return abort(state, AbortCode.PidMismatch, `successor says pid ${hello.pid}, but the supervisor spawned pid ${String(state.successorPid)}; is the command a wrapper that forks (use exec)?`);
  }
  let version: number;
  try {
    version = negotiateVersion(s.versions ?? { min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX }, { min: hello.protoMin, max: hello.protoMax });
  } catch (error) {
    const message = error instanceof HandoffProtocolError ? error.message : String(error);
    return abort({ ...state, successorGreeted: true }, AbortCode.VersionMismatch, message);
  }
  const capabilities = commonCapabilities(s.capabilities, hello.capabilities);
  const overlap = hasCapability(capabilities, 'Overlap');
  const greeted: SupervisorState = { ...state, successorGreeted: true, version, capabilities, overlap };
  const effects: SupervisorEffect[] = [
    { type: 'sendToSuccessor', message: { type: 'HelloAck', version, handoffId: s.handoffId, capabilities } },
    { type: 'setTimer', timer: 'successorLiveness', ms: s.timeouts.livenessMs },
  ];
  // Overlap: nothing to drain or seal first; the incumbent serves on until the commit point.
  if (!state.incumbentAlive || overlap) {
    const r = begin(greeted, null);
    return { state: r.state, effects: [...effects, ...r.effects] };
  }
  if (!state.incumbentConnected) {
    return abort(greeted, AbortCode.IncumbentDisconnected, 'the incumbent closed its control session before the handoff began');
  }
  const moving = (s.moveConnections ?? false) && hasCapability(capabilities, 'MoveConnections');
  return {
    state: { ...greeted, phase: 'preparing', incumbentPrepared: true, moving },
    effects: [
      ...effects,
      { type: 'journal', phase: 'preparing', seal: null },
      {
        type: 'sendToIncumbent',
        message: {
          type: 'PrepareHandoff',
          handoffId: s.handoffId,
          successorPid: hello.pid,
          deadlineMs: s.timeouts.drainMs,
          drainGraceMs: Math.min(s.timeouts.drainGraceMs, s.timeouts.drainMs),
          cutWork: s.cutWork ?? false,
          moveConns: moving,
        },
      },
      { type: 'setTimer', timer: 'phase', ms: s.timeouts.drainMs },
      { type: 'setTimer', timer: 'incumbentLiveness', ms: s.timeouts.livenessMs },
    ],
  };
}

function checkId(state: SupervisorState, message: { readonly type: string; readonly handoffId: string }): HandoffProtocolError | undefined {
  return message.handoffId === id(state) ? undefined : violation(state, `${message.type} for handoff ${message.handoffId}, expected ${id(state)}`);
}

function onIncumbentMessage(state: SupervisorState, message: ToSupervisorMessage): Result {
  const s = spec(state);
  const liveness: SupervisorEffect[] = state.incumbentPrepared && (state.phase === 'preparing' || state.phase === 'sealing')
    ? [{ type: 'setTimer', timer: 'incumbentLiveness', ms: s.timeouts.livenessMs }]
    : [];
  if (message.type === 'Heartbeat') return { state, effects: liveness };
  // A reload the daemon still reports on (its supervisor stopped waiting for it): not this handoff's business.
  if (message.type === 'ReloadProgress' || message.type === 'ReloadDone') return { state, effects: [] };
  // Progress and offers of a handoff that ended (still in flight when it did): not this one's.
  if ((message.type === 'DrainProgress' || message.type === 'ConnOffer') && message.handoffId !== s.handoffId) return { state, effects: [] };
  const expect = (ok: boolean, what: string): HandoffProtocolError | undefined => (ok ? undefined : violation(state, `unexpected ${what} from the incumbent`));
  switch (message.type) {
    case 'Drained': {
      const bad = expect(state.phase === 'preparing', 'Drained') ?? checkId(state, message);
      if (bad) return abortForViolation(state, bad);
      return {
        state: { ...state, phase: 'sealing', drained: { openConnsRemaining: message.openConnsRemaining, workCut: message.workCut, connsOffered: message.connsOffered } },
        effects: [
          ...liveness,
          { type: 'journal', phase: 'sealing', seal: null },
          { type: 'sendToIncumbent', message: { type: 'SealRequest', handoffId: s.handoffId } },
          { type: 'setTimer', timer: 'phase', ms: s.timeouts.sealMs },
        ],
      };
    }
    case 'ConnOffer': {
      // Read after the incumbent's death was noticed (its frames were still buffered): too late to forward; not a violation.
      if (!state.incumbentAlive) return { state, effects: [] };
      // Forwarded as is, its descriptor beside it; the successor adopts it only after Commit.
      const bad = expect(state.phase === 'preparing' && state.moving, 'ConnOffer') ?? checkId(state, message);
      if (bad) return abortForViolation(state, bad);
      return { state: { ...state, connsForwarded: state.connsForwarded + 1 }, effects: [...liveness, { type: 'sendToSuccessor', message }] };
    }
    case 'DrainProgress': {
      const bad = expect(state.phase === 'preparing', 'DrainProgress') ?? checkId(state, message);
      if (bad) return abortForViolation(state, bad);
      const { pending, kinds, counts, oldest, oldestMs, leftMs } = message;
      return { state, effects: [...liveness, { type: 'drainProgress', progress: { pending, kinds, counts, oldest, oldestMs, leftMs } }] };
    }
    case 'SealProgress': {
      const bad = expect(state.phase === 'sealing', 'SealProgress') ?? checkId(state, message);
      if (bad) return abortForViolation(state, bad);
      return { state, effects: [...liveness, { type: 'sealProgress', completed: message.completed, total: message.total }] };
    }
    case 'SealComplete': {
      const bad = expect(state.phase === 'sealing', 'SealComplete') ?? checkId(state, message);
      if (bad) return abortForViolation(state, bad);
      return begin(state, { revisions: message.revisions, fingerprint: message.fingerprint }, message.state);
    }
    case 'SealFailed': {
      const bad = expect(state.phase === 'preparing' || state.phase === 'sealing', 'SealFailed') ?? checkId(state, message);
      if (bad) return abortForViolation(state, bad);
      return abort(state, AbortCode.SealFailed, `the incumbent could not drain or seal: ${message.error}`);
    }
    case 'Hello':
    case 'Ready':
    case 'HolderSpawned':
      return abortForViolation(state, violation(state, `unexpected ${message.type} from the incumbent`));
    default:
      return assertNever(message, 'message');
  }
}

function onSuccessorMessage(state: SupervisorState, message: ToSupervisorMessage): Result {
  const s = spec(state);
  if (message.type === 'Hello') {
    if (state.phase !== 'awaitingHello') return abortForViolation(state, violation(state, 'a second Hello from the successor'));
    return onHello(state, message);
  }
  if (!state.successorGreeted) return abortForViolation(state, violation(state, `${message.type} from the successor before its Hello`));
  const liveness: SupervisorEffect = { type: 'setTimer', timer: 'successorLiveness', ms: s.timeouts.livenessMs };
  switch (message.type) {
    case 'Heartbeat':
      return { state, effects: [liveness] };
    case 'Ready': {
      const bad = (state.phase === 'beginning' ? undefined : violation(state, 'Ready before Begin')) ?? checkId(state, message);
      if (bad) return abortForViolation(state, bad);
      if (!message.healthy) return abort(state, AbortCode.Unhealthy, 'the successor reported itself unhealthy in Ready');
      if (state.overlap) {
        // The successor accepts already; the old incumbent now stops as on an operator's stop.
        const stop: SupervisorEffect[] = state.incumbentAlive ? [{ type: 'stopIncumbent', graceMs: s.timeouts.drainMs + s.timeouts.stopGraceMs }] : [];
        return finish({ ...state, abort: null }, 'committed', [
          { type: 'journal', phase: 'committed', seal: null },
          { type: 'sendToSuccessor', message: { type: 'Commit', handoffId: s.handoffId } },
          ...stop,
        ]);
      }
      if (state.seal) {
        const gap = explainRevisionGap(state.seal.revisions, message.revisions);
        if (gap !== undefined) return abort(state, AbortCode.RevisionsDiverged, `the successor's data does not continue the sealed data: ${gap}`);
      }
      const commit = { type: 'Commit', handoffId: s.handoffId } as const;
      const toIncumbent: SupervisorEffect[] = state.incumbentAlive && state.incumbentConnected ? [{ type: 'sendToIncumbent', message: commit }] : [];
      const committed = { ...state, abort: null };
      const r = finish(committed, state.seal ? 'committed' : 'promoted', [
        { type: 'journal', phase: 'committed', seal: state.seal },
        ...toIncumbent,
        { type: 'sendToSuccessor', message: commit },
      ]);
      return r;
    }
    case 'Drained':
    case 'DrainProgress':
    case 'ConnOffer':
    case 'SealProgress':
    case 'SealComplete':
    case 'SealFailed':
    case 'HolderSpawned':
    case 'ReloadProgress':
    case 'ReloadDone':
      return abortForViolation(state, violation(state, `${message.type} from the successor`));
    default:
      return assertNever(message, 'message');
  }
}

function onTimeout(state: SupervisorState, timer: SupervisorTimer, now: number): Result {
  const s = spec(state);
  switch (timer) {
    case 'heartbeat': {
      const effects: SupervisorEffect[] = [];
      const beat = { type: 'Heartbeat', ts: Math.max(0, Math.floor(now)) } as const;
      if (state.successorGreeted && state.successorRunning) effects.push({ type: 'sendToSuccessor', message: beat });
      if (state.incumbentPrepared && state.incumbentAlive && state.incumbentConnected) effects.push({ type: 'sendToIncumbent', message: beat });
      effects.push({ type: 'setTimer', timer: 'heartbeat', ms: s.timeouts.heartbeatMs });
      return { state, effects };
    }
    case 'phase':
      return abort(state, AbortCode.PhaseTimeout, `phase ${state.phase} exceeded its deadline`);
    case 'total':
      return abort(state, AbortCode.TotalTimeout, `the handoff exceeded its total deadline of ${s.timeouts.totalMs} ms`);
    case 'incumbentLiveness':
      if (state.phase !== 'preparing' && state.phase !== 'sealing') return { state, effects: [] };
      return abort(state, AbortCode.IncumbentSilent, `the incumbent sent nothing for ${s.timeouts.livenessMs} ms`);
    case 'successorLiveness':
      if (!state.successorGreeted) return { state, effects: [] };
      return abort(state, AbortCode.SuccessorSilent, `the successor sent nothing for ${s.timeouts.livenessMs} ms`);
    default:
      return assertNever(timer, 'timer');
  }
}

/**
 * The supervisor's transition function. Pure; never throws for any (state, event) pair.
 */
export function supervisorTransition(state: SupervisorState, event: SupervisorEvent): Result {
  const final = SUPERVISOR_FINAL_PHASES.includes(state.phase);
  if (final) return { state, effects: [] };
  if (state.phase === 'idle') {
    switch (event.type) {
      case 'start': {
        const t = event.spec.timeouts;
        return {
          state: { ...state, phase: 'spawning', spec: event.spec },
          effects: [
            { type: 'journal', phase: 'spawning', seal: null },
            { type: 'setTimer', timer: 'total', ms: t.totalMs },
            { type: 'setTimer', timer: 'phase', ms: t.helloMs },
            { type: 'setTimer', timer: 'heartbeat', ms: t.heartbeatMs },
            { type: 'spawnSuccessor', handoffId: event.spec.handoffId },
          ],
        };
      }
      case 'incumbentExited':
        return { state: { ...state, incumbentAlive: false, incumbentConnected: false }, effects: [] };
      case 'incumbentDisconnected':
        return { state: { ...state, incumbentConnected: false }, effects: [] };
      case 'incumbentMessage':
        if (event.message.type === 'Heartbeat' || event.message.type === 'ReloadProgress' || event.message.type === 'ReloadDone') return { state, effects: [] };
        return { state, effects: [], violation: violation(state, `${event.message.type} from the incumbent with no handoff`) };
      case 'timeout':
      case 'cancel':
        return { state, effects: [] };
      case 'spawned':
      case 'spawnFailed':
      case 'successorMessage':
      case 'successorGone':
        return { state, effects: [], violation: violation(state, `${event.type} with no handoff started`) };
      default:
        return assertNever(event, 'event');
    }
  }
  if (event.type === 'start') return { state, effects: [], violation: violation(state, 'start while a handoff is in progress') };
  if (state.phase === 'aborting') return whileAborting(state, event);
  switch (event.type) {
    case 'spawned':
      if (state.phase !== 'spawning') return abortForViolation(state, violation(state, 'spawned twice'));
      return { state: { ...state, phase: 'awaitingHello', successorPid: event.pid, successorRunning: true }, effects: [] };
    case 'spawnFailed':
      if (state.phase !== 'spawning') return abortForViolation(state, violation(state, 'spawnFailed after spawned'));
      return abort(state, AbortCode.SpawnFailed, `the successor could not be spawned: ${event.error}`);
    case 'successorMessage':
      if (!state.successorRunning) return abortForViolation(state, violation(state, 'a successor message before the successor was spawned'));
      return onSuccessorMessage(state, event.message);
    case 'incumbentMessage':
      return onIncumbentMessage(state, event.message);
    case 'successorGone': {
      const gone: SupervisorState = { ...state, successorRunning: false };
      if (state.phase === 'spawning') return abortForViolation(gone, violation(state, 'successorGone before spawned'));
      return abort(gone, AbortCode.SuccessorExited, `the successor exited during phase ${state.phase}: ${event.reason}`);
    }
    case 'incumbentExited': {
      const dead: SupervisorState = { ...state, incumbentAlive: false, incumbentConnected: false };
      if (state.phase === 'preparing' || state.phase === 'sealing') return begin({ ...dead, seal: null }, null);
      return { state: dead, effects: [] };
    }
    case 'incumbentDisconnected': {
      const gone: SupervisorState = { ...state, incumbentConnected: false };
      if (state.phase === 'preparing' || state.phase === 'sealing') {
        return abort(gone, AbortCode.IncumbentDisconnected, `the incumbent closed its control session during phase ${state.phase}: ${event.reason}`);
      }
      return { state: gone, effects: [] };
    }
    case 'timeout':
      return onTimeout(state, event.timer, event.now);
    case 'cancel':
      return abort(state, AbortCode.Cancelled, `cancelled: ${event.reason}`);
    default:
      return assertNever(event, 'event');
  }
}

/** In `aborting` the machine only waits for the successor to be gone; everything else is moot. */
function whileAborting(state: SupervisorState, event: Exclude<SupervisorEvent, { type: 'start' }>): Result {
  switch (event.type) {
    case 'successorGone':
      return settle({ ...state, successorRunning: false });
    case 'incumbentExited':
      return { state: { ...state, incumbentAlive: false, incumbentConnected: false }, effects: [] };
    case 'incumbentDisconnected':
      return { state: { ...state, incumbentConnected: false }, effects: [] };
    case 'timeout':
      // The stop safety net expired: go on; the kernel lock keeps the successor from writing.
      if (event.timer === 'phase') return settle({ ...state, successorRunning: false });
      if (event.timer === 'heartbeat') return onTimeout(state, 'heartbeat', event.now);
      return { state, effects: [] };
    case 'spawned':
    case 'spawnFailed':
    case 'successorMessage':
    case 'incumbentMessage':
    case 'cancel':
      return { state, effects: [] };
    default:
      return assertNever(event, 'event');
  }
}
