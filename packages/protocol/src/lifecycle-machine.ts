/**
 * The supervisor's lifecycle, as a pure state machine: recovering at start, cold-starting,
 * serving, handing off, restarting a daemon that died (with backoff), giving up on a crash
 * loop, stopping. One handoff inside it is the handoff machine of `supervisor-machine.ts`.
 *
 * The machine keeps track of which daemon serves, whatever order the world reports things
 * in: a daemon process may die at any instant — before, during or after a handoff, before
 * or after the handoff machine decided its outcome, before or after the supervisor opened a
 * session with it — and every death of the daemon that serves (or that a committed handoff
 * made the server) is a crash that the restart policy answers. So the state never names a
 * dead daemon as serving. See PROTOCOL.md, section 10, "Supervisor lifecycle".
 *
 * Events that arrive late (about a daemon that is no longer the one that matters) are
 * ignored: every event names the pid it is about.
 */
import { ErrorCode, HandoffProtocolError, ProtocolErrorCode, assertNever } from './errors.js';
import type { SupervisorErrorCode } from './errors.js';
import type { CancelTimer, SetTimer, Transition } from './machine.js';
import type { OutcomeKind } from './supervisor-machine.js';

/** The program a daemon runs. */
export interface DaemonProgram {
  readonly command: string;
  readonly args: readonly string[];
  /** Set over the supervisor's own environment. */
  readonly env: Readonly<Record<string, string>>;
  /** The working directory; null: the supervisor's. */
  readonly cwd: string | null;
}

/**
 * What one handoff changes of the program: `command`, `args` and `cwd` replace the current
 * ones; `env` entries are set over the current environment (with `replaceEnv`, `env` is the
 * whole environment).
 */
export interface ProgramChange {
  readonly command?: string;
  readonly args?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string | null;
  readonly replaceEnv?: boolean;
}

/** The program after `change`. */
export function changeProgram(program: DaemonProgram, change: ProgramChange): DaemonProgram {
  return {
    command: change.command ?? program.command,
    args: change.args ?? program.args,
    env: change.replaceEnv ? { ...change.env } : change.env ? { ...program.env, ...change.env } : program.env,
    cwd: change.cwd === undefined ? program.cwd : change.cwd,
  };
}

/** True when `a` and `b` run the same thing (command, args, env, cwd). */
export function sameProgram(a: DaemonProgram, b: DaemonProgram): boolean {
  const keys = Object.keys(a.env);
  return (
    a.command === b.command &&
    a.cwd === b.cwd &&
    a.args.length === b.args.length &&
    a.args.every((x, i) => x === b.args[i]) &&
    keys.length === Object.keys(b.env).length &&
    keys.every((k) => Object.prototype.hasOwnProperty.call(b.env, k) && a.env[k] === b.env[k])
  );
}

/**
 * What a supervisor remembers of its versions across its own restarts (it keeps them in its
 * journal): the program that serves, whether it proved good, the last known good one before
 * it, and the generation of the daemon that served.
 */
export interface RememberedVersions {
  readonly program: DaemonProgram;
  readonly programGood: boolean;
  readonly lastGood: DaemonProgram | null;
  readonly generation: number;
  /** When the adopted daemon is the one the journal names as serving: since when it serves (ms); else null. */
  readonly servingSince: number | null;
}

/**
 * What to do when the daemon dies outside a handoff's decision: restart it after a delay that
 * doubles with each failure in the window (from `initialDelayMs` up to `maxDelayMs`); more
 * than `maxFailures` failures in `windowMs` is a crash loop, and the supervisor gives up
 * (`failed`). With `policy: 'never'` it gives up at the first death.
 */
export interface RestartPolicy {
  readonly policy: 'on-failure' | 'never';
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  readonly maxFailures: number;
  readonly windowMs: number;
}

/** Defaults of {@link RestartPolicy}. */
export const DEFAULT_RESTART_POLICY: RestartPolicy = { policy: 'on-failure', initialDelayMs: 100, maxDelayMs: 5_000, maxFailures: 5, windowMs: 60_000 };

/**
 * Phases of the lifecycle:
 * - `created`: not started.
 * - `recovering`: at start, and before every restart: reading the journal and adopting the
 *   live daemon that holds the lock and answers on the control socket, if there is one.
 * - `starting`: a daemon was cold-started; waiting for its control session.
 * - `serving`: a daemon serves (its session may be reopening).
 * - `handingOff`: a handoff runs (the handoff machine decides it).
 * - `restarting`: the daemon died; recovery (then, if nobody serves, a cold start of the
 *   last committed program) is due when the `restart` timer fires.
 * - `failed`: the supervisor gave up (crash loop, the policy is `never`, or the first daemon
 *   never served); nothing runs.
 * - `stopping`: the daemon drains, seals and exits; every other child is stopped.
 * - `stopped`: final.
 */
export type LifecyclePhase = 'created' | 'recovering' | 'starting' | 'serving' | 'handingOff' | 'restarting' | 'failed' | 'stopping' | 'stopped';

/** Timers of the lifecycle machine. */
export type LifecycleTimer = 'restart' | 'probation';

/** The daemon that serves; in `handingOff`, the incumbent. */
export interface ServingDaemon {
  readonly pid: number;
  /** From its Hello; empty until its session opened. */
  readonly buildId: string;
  /** 1 for the first daemon, +1 for every daemon that serves after it. */
  readonly generation: number;
  /** When it started to serve (ms). */
  readonly since: number;
  /** Adopted by recovery: not a child of this supervisor. */
  readonly adopted: boolean;
  /** True while a control session with it is open; false while one is being opened. */
  readonly session: boolean;
}

/** The handoff in progress. */
export interface LifecycleHandoff {
  readonly requestId: number;
  /** The successor's program, committed when the handoff commits. */
  readonly program: DaemonProgram;
  readonly successorPid: number | null;
  /** False once the successor's process died (at any instant, also after the commit point). */
  readonly successorAlive: boolean;
  /** False once the incumbent's process died. */
  readonly incumbentAlive: boolean;
  /** Set when this handoff reverts to the last known good version: why. */
  readonly revert: string | null;
  /** The probation window of the new version, when this request set one (else the configured one). */
  readonly probationMs: number | null;
}

/** A new version being watched after it started to serve (see {@link LifecycleState.probation}). */
export interface Probation {
  readonly pid: number;
  /** When it ends (ms): the version is then good. */
  readonly until: number;
}

/** How a probation ended: `passed` (the version is good), `reverted` (the last known good version serves again), `failed` (it failed, and nothing better was left to run). */
export interface ProbationOutcome {
  readonly pid: number;
  readonly outcome: 'passed' | 'reverted' | 'failed';
  readonly reason: string | null;
  readonly at: number;
}

/** A return to the last known good version. */
export interface Revert {
  readonly reason: string;
  readonly at: number;
  readonly from: DaemonProgram;
  readonly to: DaemonProgram;
}

/** A handoff's request whose answer waits for the serving daemon's session to open. */
export interface Settling {
  readonly requestId: number;
  readonly pid: number;
  /** The handoff committed (`pid` is the new daemon) or rolled back (`pid` is the old one). */
  readonly after: 'commit' | 'rollback';
}

/** In `restarting`: a live, unusable daemon being stopped; the backoff starts once it exited. */
export interface AwaitingExit {
  readonly pid: number;
  readonly delayMs: number;
}

/** The lifecycle machine's state. */
export interface LifecycleState {
  readonly phase: LifecyclePhase;
  readonly policy: RestartPolicy;
  /** The program that serves, and that a restart starts: the last committed one. */
  readonly program: DaemonProgram;
  /** `program` proved good: it served through its probation (or no probation is configured). */
  readonly programGood: boolean;
  /** The last known good program before `program`: where a failing new version falls back to. */
  readonly lastGood: DaemonProgram | null;
  /** How long a new version is watched after it starts to serve (0: not at all; it is good once it serves). */
  readonly probationMs: number;
  /** The serving version's probation, while it runs. */
  readonly probation: Probation | null;
  readonly lastProbation: ProbationOutcome | null;
  readonly lastRevert: Revert | null;
  /** A handoff request answered by a cold start (asked for while no daemon served): its id. */
  readonly coldRequest: number | null;
  /** Id of the next handoff the machine starts itself (reverts): negative, so never a caller's. */
  readonly nextRevertId: number;
  /** The daemon that serves (the incumbent while handing off); never a dead one. */
  readonly daemon: ServingDaemon | null;
  /** In `starting`: the cold-started daemon's pid, once spawned. */
  readonly startingPid: number | null;
  /** In `handingOff`. */
  readonly handoff: LifecycleHandoff | null;
  readonly settling: Settling | null;
  /** Times (ms) of the deaths counted in the restart window. */
  readonly failures: readonly number[];
  /** Restarts scheduled so far. */
  readonly restarts: number;
  /** Generation of the last daemon that served. */
  readonly generation: number;
  /** In `failed`: why the supervisor gave up. */
  readonly failure: string | null;
  /** In `restarting`: the backoff waits for this daemon's exit (it was stopped: alive but unusable). */
  readonly awaitingExit: AwaitingExit | null;
  /** A stop asked for while recovering or handing off: it follows, with this grace. */
  readonly stopPending: number | null;
}

/** Events fed to the lifecycle machine. */
export type LifecycleEvent =
  | { readonly type: 'start'; readonly now: number }
  /** Recovery is done: `adopted` is the live daemon whose session is open, or null (cold start needed). */
  | { readonly type: 'recovered'; readonly adopted: { readonly pid: number; readonly buildId: string } | null; readonly now: number; readonly versions?: RememberedVersions | null }
  /** Recovery could not look (e.g. the data directory's lock file cannot be opened). */
  | { readonly type: 'recoveryFailed'; readonly reason: string; readonly now: number }
  /** The cold-started daemon's process exists. */
  | { readonly type: 'coldSpawned'; readonly pid: number }
  /** The cold start failed: it could not spawn (`pid` null), or the daemon lives but did not answer in time (it is then stopped). */
  | { readonly type: 'coldStartFailed'; readonly pid: number | null; readonly reason: string; readonly now: number }
  /** A control session with `pid` is open (it said Hello and holds the lock). */
  | { readonly type: 'sessionOpened'; readonly pid: number; readonly buildId: string; readonly now: number }
  /** The control session with `pid` closed while its process lives. */
  | { readonly type: 'sessionLost'; readonly pid: number }
  /** No session could be opened with the live `pid` within the deadline (it is then stopped). */
  | { readonly type: 'sessionFailed'; readonly pid: number; readonly reason: string; readonly now: number }
  /** A daemon process died (any daemon; the machine decides whether it matters). */
  | { readonly type: 'daemonExited'; readonly pid: number; readonly reason: string; readonly now: number }
  | { readonly type: 'handoffRequested'; readonly requestId: number; readonly change: ProgramChange; readonly now: number; readonly probationMs?: number }
  /** The serving daemon on probation failed its health check (as often in a row as configured). */
  | { readonly type: 'healthFailed'; readonly pid: number; readonly reason: string; readonly now: number }
  /** The configuration was reloaded: the restart policy and the probation window from now on. */
  | { readonly type: 'reconfigured'; readonly policy: Partial<RestartPolicy>; readonly probationMs: number }
  /** The handoff's successor process exists. */
  | { readonly type: 'successorSpawned'; readonly requestId: number; readonly pid: number }
  /** The handoff machine decided the outcome. */
  | { readonly type: 'handoffFinished'; readonly requestId: number; readonly outcome: OutcomeKind; readonly now: number }
  | { readonly type: 'stopRequested'; readonly graceMs: number; readonly now: number }
  /** Every daemon and child is gone after a stop. */
  | { readonly type: 'stopped' }
  | { readonly type: 'timeout'; readonly timer: LifecycleTimer; readonly now: number };

/** Effects the lifecycle's driver carries out, in order. */
export type LifecycleEffect =
  /** Read the journal and converge (adopt the live lock holder that answers, stop orphans); then feed `recovered` (or `recoveryFailed`). */
  | { readonly type: 'recover' }
  /** Spawn `program` as a cold start (feed `coldSpawned`), then wait for its session (`sessionOpened` or `coldStartFailed`). */
  | { readonly type: 'coldStart'; readonly program: DaemonProgram }
  /** Make sure a control session with `pid` is open; feed `sessionOpened` or `sessionFailed`. */
  | { readonly type: 'openSession'; readonly pid: number }
  /** Run a handoff to `program`; feed `successorSpawned` and `handoffFinished`. */
  | { readonly type: 'runHandoff'; readonly requestId: number; readonly program: DaemonProgram }
  | { readonly type: 'rejectHandoff'; readonly requestId: number; readonly code: SupervisorErrorCode; readonly message: string }
  /** Answer the handoff's request: who serves after it (null: nobody yet), and what happened after its commit point. */
  | { readonly type: 'handoffSettled'; readonly requestId: number; readonly servingPid: number | null; readonly aftermath: string | null; readonly coldStart?: true }
  /** Stop (SIGTERM, then SIGKILL) a live daemon that cannot be used; its exit is fed as `daemonExited`. */
  | { readonly type: 'stopDaemon'; readonly pid: number; readonly reason: string }
  /** Stop the serving daemon (drain, seal) and every other child within `graceMs`; then feed `stopped`. */
  | { readonly type: 'stopAll'; readonly graceMs: number }
  /** A daemon started to serve. */
  | { readonly type: 'serving'; readonly pid: number; readonly generation: number; readonly how: 'adopted' | 'started' | 'handoff' }
  /** The serving daemon died; a restart is due in `delayMs`. */
  | { readonly type: 'restartScheduled'; readonly reason: string; readonly delayMs: number; readonly failuresInWindow: number }
  | { readonly type: 'gaveUp'; readonly reason: string }
  /** The new version `pid` is on probation for `ms`: watch its health and feed `healthFailed`. */
  | { readonly type: 'probationStarted'; readonly pid: number; readonly ms: number }
  | { readonly type: 'probationEnded'; readonly pid: number; readonly outcome: ProbationOutcome['outcome']; readonly reason: string | null }
  /** The supervisor goes back to the last known good version: by a handoff (the failing one still serves) or by a restart (it died). */
  | { readonly type: 'revert'; readonly reason: string; readonly how: 'handoff' | 'restart'; readonly from: DaemonProgram; readonly to: DaemonProgram }
  | SetTimer<LifecycleTimer>
  | CancelTimer<LifecycleTimer>;

type Result = Transition<LifecycleState, LifecycleEffect>;

/** A machine before `start`. */
export function initialLifecycleState(program: DaemonProgram, policy: Partial<RestartPolicy> = {}, probationMs = 0): LifecycleState {
  return {
    phase: 'created',
    policy: { ...DEFAULT_RESTART_POLICY, ...policy },
    program,
    programGood: false,
    lastGood: null,
    probationMs,
    probation: null,
    lastProbation: null,
    lastRevert: null,
    coldRequest: null,
    nextRevertId: -1,
    daemon: null,
    startingPid: null,
    handoff: null,
    settling: null,
    failures: [],
    restarts: 0,
    generation: 0,
    failure: null,
    awaitingExit: null,
    stopPending: null,
  };
}

function same(state: LifecycleState): Result {
  return { state, effects: [] };
}

function violation(state: LifecycleState, what: string): Result {
  return {
    state,
    effects: [],
    violation: new HandoffProtocolError(ProtocolErrorCode.ProtocolViolation, `${what} (supervisor lifecycle in phase ${state.phase})`, { phase: state.phase }),
  };
}

/**
 * Starts serving with `daemon`. A version not yet proven good goes on probation for `probationMs`
 * (it is good at once when that is 0). `keep` is an adopted daemon the journal named as serving:
 * its generation and start of service are kept.
 */
function serve(state: LifecycleState, pid: number, buildId: string, now: number, how: 'adopted' | 'started' | 'handoff', session: boolean, probationMs = state.probationMs, keep: number | null = null): Result {
  const generation = keep === null ? state.generation + 1 : Math.max(state.generation, 1);
  const daemon: ServingDaemon = { pid, buildId, generation, since: keep ?? now, adopted: how === 'adopted', session };
  const effects: LifecycleEffect[] = [{ type: 'serving', pid, generation, how }];
  let next: LifecycleState = { ...state, phase: 'serving', daemon, startingPid: null, generation, failure: null, probation: null, coldRequest: null };
  if (state.coldRequest !== null) effects.push({ type: 'handoffSettled', requestId: state.coldRequest, servingPid: pid, aftermath: null, coldStart: true });
  if (!state.programGood) {
    if (probationMs > 0) {
      next = { ...next, probation: { pid, until: now + probationMs } };
      effects.push({ type: 'setTimer', timer: 'probation', ms: probationMs }, { type: 'probationStarted', pid, ms: probationMs });
    } else {
      next = { ...next, programGood: true };
    }
  }
  return { state: next, effects };
}

/** Goes back to the last known good program `good` from `from`: the state, and the effect that announces it (unless it was announced when a revert handoff began). */
function revertTo(state: LifecycleState, from: DaemonProgram, good: DaemonProgram, reason: string, how: 'handoff' | 'restart', now: number, announce = true): { state: LifecycleState; effects: LifecycleEffect[] } {
  return {
    state: { ...state, program: good, programGood: true, lastGood: null, lastRevert: { reason, at: now, from, to: good } },
    effects: announce ? [{ type: 'revert', reason, how, from, to: good }] : [],
  };
}

/** The last known good program to fall back to from the current one, if there is one. */
function fallback(state: LifecycleState): DaemonProgram | null {
  return state.lastGood && !sameProgram(state.lastGood, state.program) ? state.lastGood : null;
}

/** Ends the serving version's probation, if one runs. */
function endProbation(state: LifecycleState, outcome: ProbationOutcome['outcome'], reason: string | null, now: number): { state: LifecycleState; effects: LifecycleEffect[] } {
  const p = state.probation;
  if (!p) return { state, effects: [] };
  return {
    state: { ...state, probation: null, programGood: outcome === 'passed' ? true : state.programGood, lastProbation: { pid: p.pid, outcome, reason, at: now } },
    effects: [{ type: 'cancelTimer', timer: 'probation' }, { type: 'probationEnded', pid: p.pid, outcome, reason }],
  };
}

/**
 * The daemon that should serve is gone: restart it under the policy, or give up. A daemon
 * that never served since the supervisor started (or since an operator asked for a start
 * after it gave up) is not restarted: that is a start-up failure (a wrong command, path or
 * configuration), reported at once. A version that dies on probation, or crash-loops, is
 * replaced by the last known good one when there is one. `unusable` is a live daemon that
 * must be stopped first: the backoff starts once it exited, so that the restart neither
 * adopts it nor waits for its lock.
 */
function died(state: LifecycleState, reason: string, now: number, unusable?: number, onProbation: number | null = state.probation?.pid ?? null): Result {
  const { policy } = state;
  const stopIt: LifecycleEffect[] = unusable === undefined ? [] : [{ type: 'stopDaemon', pid: unusable, reason }];
  let base: LifecycleState = { ...state, daemon: null, startingPid: null, handoff: null, awaitingExit: null, probation: null };
  const effects: LifecycleEffect[] = state.probation ? [{ type: 'cancelTimer', timer: 'probation' }] : [];
  const good = fallback(base);
  // The deaths of the version before count no more against the one restarted in its place.
  let failuresBefore = state.failures;
  if (onProbation !== null) {
    const why = `the new version died on probation: ${reason}`;
    const outcome = good ? 'reverted' : 'failed';
    base = { ...base, lastProbation: { pid: onProbation, outcome, reason: why, at: now } };
    effects.push({ type: 'probationEnded', pid: onProbation, outcome, reason: why });
    if (good) {
      const r = revertTo(base, base.program, good, why, 'restart', now);
      base = r.state;
      effects.push(...r.effects);
      failuresBefore = [];
    }
  }
  if (state.generation === 0 || state.coldRequest !== null) {
    const failure = `${reason}; it never served since the supervisor started — check its command, arguments and configuration`;
    if (state.coldRequest !== null) effects.push({ type: 'handoffSettled', requestId: state.coldRequest, servingPid: null, aftermath: failure, coldStart: true });
    return { state: { ...base, phase: 'failed', failure, coldRequest: null, programGood: false }, effects: [...effects, ...stopIt, { type: 'gaveUp', reason: failure }] };
  }
  let failures = [...failuresBefore.filter((t) => now - t < policy.windowMs), now];
  if (policy.policy === 'never') {
    const failure = `${reason}; the restart policy is "never"`;
    return { state: { ...base, failures, phase: 'failed', failure, programGood: false }, effects: [...effects, ...stopIt, { type: 'gaveUp', reason: failure }] };
  }
  if (failures.length > policy.maxFailures) {
    const loop = `${failures.length} failures within ${policy.windowMs} ms is a crash loop (limit ${policy.maxFailures})`;
    const last = fallback(base);
    if (!last) {
      const failure = `${reason}; ${loop}, and no other known-good version is left to fall back to; fix the daemon, then "handoffctl upgrade" starts it`;
      // A program that crash-loops is no longer good: started again, it is on probation.
      return { state: { ...base, failures, phase: 'failed', failure, programGood: false }, effects: [...effects, ...stopIt, { type: 'gaveUp', reason: failure }] };
    }
    const r = revertTo(base, base.program, last, `${reason}; ${loop}: falling back to the last known good version`, 'restart', now);
    base = r.state;
    effects.push(...r.effects);
    failures = [now];
  }
  const delayMs = Math.min(policy.initialDelayMs * 2 ** (failures.length - 1), policy.maxDelayMs);
  const restarting: LifecycleState = { ...base, failures, phase: 'restarting', restarts: state.restarts + 1 };
  const scheduled: LifecycleEffect = { type: 'restartScheduled', reason, delayMs, failuresInWindow: failures.length };
  if (unusable !== undefined) return { state: { ...restarting, awaitingExit: { pid: unusable, delayMs } }, effects: [...effects, scheduled, ...stopIt] };
  return { state: restarting, effects: [...effects, scheduled, { type: 'setTimer', timer: 'restart', ms: delayMs }] };
}

function stop(state: LifecycleState, graceMs: number): Result {
  const answer: LifecycleEffect[] = state.coldRequest === null ? [] : [{ type: 'handoffSettled', requestId: state.coldRequest, servingPid: null, aftermath: 'the supervisor is stopping', coldStart: true }];
  return {
    state: { ...state, phase: 'stopping', stopPending: null, startingPid: null, coldRequest: null, probation: null },
    effects: [...answer, { type: 'cancelTimer', timer: 'restart' }, ...(state.probation ? [{ type: 'cancelTimer', timer: 'probation' } as const] : []), { type: 'stopAll', graceMs }],
  };
}

/** Answers the request that waits for `pid`'s session, if any. */
function settle(state: LifecycleState, pid: number, servingPid: number | null, aftermath: string | null): { state: LifecycleState; effects: LifecycleEffect[] } {
  if (state.settling?.pid !== pid) return { state, effects: [] };
  return { state: { ...state, settling: null }, effects: [{ type: 'handoffSettled', requestId: state.settling.requestId, servingPid, aftermath }] };
}

function then(first: { state: LifecycleState; effects: readonly LifecycleEffect[] }, next: (state: LifecycleState) => Result): Result {
  const r = next(first.state);
  return { ...r, effects: [...first.effects, ...r.effects] };
}

/** Why no handoff can start now. */
function noHandoff(state: LifecycleState, requestId: number): Result {
  const reject = (code: SupervisorErrorCode, message: string): Result => ({ state, effects: [{ type: 'rejectHandoff', requestId, code, message }] });
  switch (state.phase) {
    case 'handingOff':
      return reject(ErrorCode.InProgress, state.handoff?.revert ? 'the supervisor is reverting to the last known good version; wait for its outcome' : 'a handoff is in progress; wait for its outcome before starting another');
    case 'failed':
      return reject(ErrorCode.NoIncumbent, `no daemon serves: the supervisor gave up: ${state.failure ?? ''}`);
    case 'serving':
      return reject(ErrorCode.NoIncumbent, `the supervisor is reopening its session with the daemon (pid ${String(state.daemon?.pid)}); try again in a moment`);
    case 'restarting':
      return reject(ErrorCode.NoIncumbent, 'no daemon serves: the daemon died and is being restarted; try again once it serves');
    case 'created':
    case 'recovering':
    case 'starting':
      return reject(ErrorCode.NoIncumbent, `no daemon serves yet (supervisor ${state.phase}); wait for the daemon to start`);
    case 'stopping':
    case 'stopped':
      return reject(ErrorCode.NoIncumbent, `the supervisor is ${state.phase}`);
    default:
      return assertNever(state.phase, 'phase');
  }
}

/** The end of a handoff, once the handoff machine decided. */
function finishHandoff(state: LifecycleState, handoff: LifecycleHandoff, outcome: OutcomeKind, now: number): Result {
  const base: LifecycleState = { ...state, handoff: null, phase: 'serving' };
  const answer = (servingPid: number | null, aftermath: string | null): LifecycleEffect => ({ type: 'handoffSettled', requestId: handoff.requestId, servingPid, aftermath });
  /** A revert's target serves (or is restarted): the failing version's probation ended in a revert. */
  const backToGood = (s: LifecycleState): { state: LifecycleState; effects: LifecycleEffect[] } => {
    const reason = handoff.revert ?? '';
    const ended = endProbation(s, 'reverted', reason, now);
    return { state: revertTo(ended.state, state.program, handoff.program, reason, 'handoff', now, false).state, effects: ended.effects };
  };
  /** A revert that did not go through ends the failing version's probation: it serves on, and nothing better is left. */
  const revertFailed = (s: LifecycleState, why: string): { state: LifecycleState; effects: LifecycleEffect[] } =>
    handoff.revert === null ? { state: s, effects: [] } : endProbation(s, 'failed', `${handoff.revert}; reverting to the last known good version failed: ${why}`, now);
  switch (outcome) {
    case 'committed':
    case 'promoted': {
      let committed: LifecycleState;
      let effects: LifecycleEffect[];
      if (handoff.revert !== null) {
        ({ state: committed, effects } = backToGood(base));
      } else {
        // The old version is superseded: its probation, if it ran, ends with it. It becomes the
        // fallback if it proved good, or if nothing older did (unproven beats nothing).
        const lastGood = sameProgram(handoff.program, state.program) ? state.lastGood : state.programGood || state.lastGood === null ? state.program : state.lastGood;
        committed = { ...base, probation: null, program: handoff.program, programGood: false, lastGood };
        effects = state.probation ? [{ type: 'cancelTimer', timer: 'probation' }] : [];
      }
      const probationMs = handoff.probationMs ?? state.probationMs;
      if (handoff.successorPid !== null && handoff.successorAlive) {
        const r = serve(committed, handoff.successorPid, '', now, 'handoff', false, probationMs);
        return {
          state: { ...r.state, settling: { requestId: handoff.requestId, pid: handoff.successorPid, after: 'commit' } },
          effects: [...effects, ...r.effects, { type: 'openSession', pid: handoff.successorPid }],
        };
      }
      const why = handoff.successorPid === null ? 'the handoff committed, but no successor process is known' : `the new daemon (pid ${handoff.successorPid}) died right after the commit point`;
      // A new version that dies before it could serve failed its probation, if it was to have one.
      const onProbation = !committed.programGood && probationMs > 0 ? (handoff.successorPid ?? 0) : null;
      const restarts = onProbation !== null && fallback(committed) ? 'the last known good version' : 'the committed program';
      return then({ state: committed, effects: [...effects, answer(null, `${why}; the supervisor restarts ${restarts}`)] }, (s) => died(s, why, now, undefined, onProbation));
    }
    case 'rolledBack': {
      const failed = revertFailed(base, 'the handoff rolled back');
      if (handoff.incumbentAlive && state.daemon) {
        const pid = state.daemon.pid;
        return {
          state: { ...failed.state, daemon: { ...state.daemon, session: false }, settling: { requestId: handoff.requestId, pid, after: 'rollback' } },
          effects: [...failed.effects, { type: 'openSession', pid }],
        };
      }
      const why = 'the incumbent died during the handoff, which rolled back';
      return then({ state: failed.state, effects: [...failed.effects, answer(null, `${why}; the supervisor restarts it`)] }, (s) => died(s, why, now));
    }
    case 'coldStart': {
      const why = 'the incumbent died during the handoff and the successor could not take over';
      // A revert's target is started afresh: the failing version is not worth a restart.
      const back = handoff.revert === null ? { state: base, effects: [] } : backToGood(base);
      return then({ state: back.state, effects: [...back.effects, answer(null, `${why}; the supervisor starts the daemon afresh`)] }, (s) => died(s, why, now));
    }
    default:
      return assertNever(outcome, 'outcome');
  }
}

/** The supervisor lifecycle's transition function. Pure; never throws for any (state, event) pair. */
export function lifecycleTransition(state: LifecycleState, event: LifecycleEvent): Result {
  if (state.phase === 'stopped') {
    if (event.type === 'handoffRequested') return noHandoff(state, event.requestId);
    return event.type === 'start' ? violation(state, 'start after stop') : same(state);
  }
  switch (event.type) {
    case 'start':
      if (state.phase !== 'created') return violation(state, 'start twice');
      return { state: { ...state, phase: 'recovering' }, effects: [{ type: 'recover' }] };

    case 'recovered': {
      if (state.phase !== 'recovering') return violation(state, 'recovered outside recovery');
      const v = event.versions;
      // What a previous supervisor journaled, at this one's first recovery.
      const known: LifecycleState = v ? { ...state, program: v.program, programGood: v.programGood, lastGood: v.lastGood, generation: Math.max(state.generation, v.generation) } : state;
      if (known.stopPending !== null) {
        // A stop waited for recovery: stop what it adopted, if anything (it is no child).
        const adopted: ServingDaemon | null = event.adopted ? { pid: event.adopted.pid, buildId: event.adopted.buildId, generation: known.generation, since: event.now, adopted: true, session: true } : null;
        return stop({ ...known, daemon: adopted }, known.stopPending);
      }
      if (event.adopted) return serve(known, event.adopted.pid, event.adopted.buildId, event.now, 'adopted', true, known.probationMs, v?.servingSince ?? null);
      return { state: { ...known, phase: 'starting', startingPid: null }, effects: [{ type: 'coldStart', program: known.program }] };
    }

    case 'recoveryFailed':
      if (state.phase !== 'recovering') return violation(state, 'recoveryFailed outside recovery');
      if (state.stopPending !== null) return stop(state, state.stopPending);
      return died(state, `recovery failed: ${event.reason}`, event.now);

    case 'coldSpawned':
      if (state.phase !== 'starting') return same(state);
      return { state: { ...state, startingPid: event.pid }, effects: [] };

    case 'coldStartFailed':
      if (state.phase !== 'starting' || (event.pid !== null && event.pid !== state.startingPid)) return same(state);
      return died(state, `the daemon could not start: ${event.reason}`, event.now, event.pid ?? undefined);

    case 'sessionOpened': {
      if (state.phase === 'starting' && event.pid === state.startingPid) return serve(state, event.pid, event.buildId, event.now, 'started', true);
      const d = state.daemon;
      if (d?.pid !== event.pid || (state.phase !== 'serving' && state.phase !== 'handingOff')) return same(state);
      const opened: LifecycleState = { ...state, daemon: { ...d, session: true, buildId: event.buildId || d.buildId } };
      const s = settle(opened, event.pid, event.pid, null);
      return { state: s.state, effects: s.effects };
    }

    case 'sessionLost': {
      const d = state.daemon;
      if (d?.pid !== event.pid || !d.session) return same(state);
      const lost: LifecycleState = { ...state, daemon: { ...d, session: false } };
      // While handing off, the handoff run reacts; its end reopens the session.
      if (state.phase === 'handingOff') return same(lost);
      if (state.phase !== 'serving') return same(lost);
      return { state: lost, effects: [{ type: 'openSession', pid: d.pid }] };
    }

    case 'sessionFailed': {
      const d = state.daemon;
      if (d?.pid !== event.pid || state.phase !== 'serving') return same(state);
      const why = `the daemon (pid ${d.pid}) is alive but does not answer on its control socket: ${event.reason}`;
      const s = settle(state, d.pid, null, `${why}; the supervisor stops it and restarts the program`);
      return then(s, (x) => died(x, why, event.now, d.pid));
    }

    case 'daemonExited': {
      const why = `the daemon (pid ${event.pid}) died: ${event.reason}`;
      switch (state.phase) {
        case 'starting':
          if (event.pid !== state.startingPid) return same(state);
          return died(state, why, event.now);
        case 'serving': {
          if (state.daemon?.pid !== event.pid) return same(state);
          const aftermath =
            state.settling?.after === 'rollback'
              ? `the incumbent (pid ${event.pid}) died after the handoff rolled back (${event.reason}); the supervisor restarts it`
              : `the new daemon (pid ${event.pid}) died right after the commit point (${event.reason}); the supervisor restarts ${state.probation && fallback(state) ? 'the last known good version' : 'the committed program'}`;
          return then(settle(state, event.pid, null, aftermath), (x) => died(x, why, event.now));
        }
        case 'handingOff': {
          const h = state.handoff;
          if (!h) return same(state);
          if (state.daemon?.pid === event.pid) return same({ ...state, daemon: null, handoff: { ...h, incumbentAlive: false } });
          if (h.successorPid === event.pid) return same({ ...state, handoff: { ...h, successorAlive: false } });
          return same(state);
        }
        case 'stopping':
          return same(state.daemon?.pid === event.pid ? { ...state, daemon: null } : state);
        case 'restarting': {
          // The unusable daemon that was stopped is gone: now the backoff runs.
          const awaiting = state.awaitingExit;
          if (awaiting?.pid !== event.pid) return same(state);
          return { state: { ...state, awaitingExit: null }, effects: [{ type: 'setTimer', timer: 'restart', ms: awaiting.delayMs }] };
        }
        case 'created':
        case 'recovering':
        case 'failed':
          return same(state);
        default:
          return assertNever(state.phase, 'phase');
      }
    }

    case 'handoffRequested': {
      if (state.phase === 'failed') {
        // No dead end: with nothing serving, a handoff starts the (changed) program afresh.
        const program = changeProgram(state.program, event.change);
        const same = sameProgram(program, state.program);
        const lastGood = !same && state.programGood ? state.program : state.lastGood;
        const fresh: LifecycleState = { ...state, phase: 'starting', startingPid: null, program, programGood: same && state.programGood, lastGood, failure: null, failures: [], coldRequest: event.requestId };
        return { state: fresh, effects: [{ type: 'coldStart', program }] };
      }
      if (state.phase !== 'serving' || !state.daemon?.session) return noHandoff(state, event.requestId);
      const handoff: LifecycleHandoff = { requestId: event.requestId, program: changeProgram(state.program, event.change), successorPid: null, successorAlive: false, incumbentAlive: true, revert: null, probationMs: event.probationMs ?? null };
      return { state: { ...state, phase: 'handingOff', handoff }, effects: [{ type: 'runHandoff', requestId: event.requestId, program: handoff.program }] };
    }

    case 'healthFailed': {
      const p = state.probation;
      if (p?.pid !== event.pid || state.daemon?.pid !== event.pid || state.phase !== 'serving') return same(state);
      const good = fallback(state);
      if (!good) return endProbation(state, 'failed', `${event.reason}; no other known-good version to revert to: the new version serves on`, event.now);
      // Reopening the session, or answering the handoff's request: the health check tells again.
      if (!state.daemon.session || state.settling) return same(state);
      const reason = `the new version failed on probation: ${event.reason}`;
      const handoff: LifecycleHandoff = { requestId: state.nextRevertId, program: good, successorPid: null, successorAlive: false, incumbentAlive: true, revert: reason, probationMs: null };
      return {
        state: { ...state, phase: 'handingOff', handoff, nextRevertId: state.nextRevertId - 1 },
        effects: [{ type: 'revert', reason, how: 'handoff', from: state.program, to: good }, { type: 'runHandoff', requestId: handoff.requestId, program: good }],
      };
    }

    case 'reconfigured':
      return same({ ...state, policy: { ...state.policy, ...event.policy }, probationMs: event.probationMs });

    case 'successorSpawned': {
      const h = state.handoff;
      if (state.phase !== 'handingOff' || h?.requestId !== event.requestId) return violation(state, `successorSpawned for request ${event.requestId} with no such handoff`);
      return same({ ...state, handoff: { ...h, successorPid: event.pid, successorAlive: true } });
    }

    case 'handoffFinished': {
      const h = state.handoff;
      if (state.phase !== 'handingOff' || h?.requestId !== event.requestId) return violation(state, `handoffFinished for request ${event.requestId} with no such handoff`);
      const r = finishHandoff(state, h, event.outcome, event.now);
      if (state.stopPending === null) return r;
      // A stop waited for this handoff: answer the request, then stop whatever serves now.
      const answered = r.effects.filter((e) => e.type === 'handoffSettled' || e.type === 'serving' || e.type === 'gaveUp');
      const settling = r.state.settling;
      const effects: LifecycleEffect[] = [...answered];
      if (settling) effects.push({ type: 'handoffSettled', requestId: settling.requestId, servingPid: settling.pid, aftermath: null });
      const s = stop({ ...r.state, settling: null }, state.stopPending);
      return { state: s.state, effects: [...effects, ...s.effects] };
    }

    case 'stopRequested':
      switch (state.phase) {
        case 'created':
          return same({ ...state, phase: 'stopped' });
        case 'recovering':
        case 'handingOff':
          return same({ ...state, stopPending: event.graceMs });
        case 'stopping':
          return same(state);
        case 'starting':
        case 'serving':
        case 'restarting':
        case 'failed': {
          const s = state.settling ? settle(state, state.settling.pid, null, 'the supervisor is stopping') : { state, effects: [] };
          return then(s, (x) => stop(x, event.graceMs));
        }
        default:
          return assertNever(state.phase, 'phase');
      }

    case 'stopped':
      if (state.phase !== 'stopping') return violation(state, 'stopped without a stop');
      return same({ ...state, phase: 'stopped', daemon: null });

    case 'timeout':
      if (event.timer === 'probation') {
        // A version being reverted does not pass its probation while the revert runs.
        if ((state.phase !== 'serving' && state.phase !== 'handingOff') || state.handoff?.revert) return same(state);
        return endProbation(state, 'passed', null, event.now);
      }
      // A restart begins like a start: a live daemon that holds the lock and answers (say,
      // an incumbent that resumed on its own while its successor died) is adopted, not
      // fought over with a second one.
      if (state.phase !== 'restarting' || state.awaitingExit) return same(state);
      return { state: { ...state, phase: 'recovering' }, effects: [{ type: 'recover' }] };

    default:
      return assertNever(event, 'event');
  }
}
