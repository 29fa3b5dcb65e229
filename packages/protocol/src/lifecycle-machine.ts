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
 * ones; `env` entries are set over the current environment.
 */
export interface ProgramChange {
  readonly command?: string;
  readonly args?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string | null;
}

/** The program after `change`. */
export function changeProgram(program: DaemonProgram, change: ProgramChange): DaemonProgram {
  return {
    command: change.command ?? program.command,
    args: change.args ?? program.args,
    env: change.env ? { ...program.env, ...change.env } : program.env,
    cwd: change.cwd === undefined ? program.cwd : change.cwd,
  };
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
export type LifecycleTimer = 'restart';

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
  | { readonly type: 'recovered'; readonly adopted: { readonly pid: number; readonly buildId: string } | null; readonly now: number }
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
  | { readonly type: 'handoffRequested'; readonly requestId: number; readonly change: ProgramChange; readonly now: number }
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
  | { readonly type: 'handoffSettled'; readonly requestId: number; readonly servingPid: number | null; readonly aftermath: string | null }
  /** Stop (SIGTERM, then SIGKILL) a live daemon that cannot be used; its exit is fed as `daemonExited`. */
  | { readonly type: 'stopDaemon'; readonly pid: number; readonly reason: string }
  /** Stop the serving daemon (drain, seal) and every other child within `graceMs`; then feed `stopped`. */
  | { readonly type: 'stopAll'; readonly graceMs: number }
  /** A daemon started to serve. */
  | { readonly type: 'serving'; readonly pid: number; readonly generation: number; readonly how: 'adopted' | 'started' | 'handoff' }
  /** The serving daemon died; a restart is due in `delayMs`. */
  | { readonly type: 'restartScheduled'; readonly reason: string; readonly delayMs: number; readonly failuresInWindow: number }
  | { readonly type: 'gaveUp'; readonly reason: string }
  | SetTimer<LifecycleTimer>
  | CancelTimer<LifecycleTimer>;

type Result = Transition<LifecycleState, LifecycleEffect>;

/** A machine before `start`. */
export function initialLifecycleState(program: DaemonProgram, policy: Partial<RestartPolicy> = {}): LifecycleState {
  return {
    phase: 'created',
    policy: { ...DEFAULT_RESTART_POLICY, ...policy },
    program,
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

/** Starts serving with `daemon`. */
function serve(state: LifecycleState, pid: number, buildId: string, now: number, how: 'adopted' | 'started' | 'handoff', session: boolean): Result {
  const generation = state.generation + 1;
  const daemon: ServingDaemon = { pid, buildId, generation, since: now, adopted: how === 'adopted', session };
  return {
    state: { ...state, phase: 'serving', daemon, startingPid: null, generation, failure: null },
    effects: [{ type: 'serving', pid, generation, how }],
  };
}

/**
 * The daemon that should serve is gone: restart it under the policy, or give up. A daemon
 * that never served since the supervisor started is not restarted: that is a start-up
 * failure (a wrong command, path or configuration), reported at once. `unusable` is a live
 * daemon that must be stopped first: the backoff starts once it exited, so that the restart
 * neither adopts it nor waits for its lock.
 */
function died(state: LifecycleState, reason: string, now: number, unusable?: number): Result {
  const { policy } = state;
  const stopIt: LifecycleEffect[] = unusable === undefined ? [] : [{ type: 'stopDaemon', pid: unusable, reason }];
  const base: LifecycleState = { ...state, daemon: null, startingPid: null, handoff: null, awaitingExit: null };
  if (state.generation === 0) {
    const failure = `${reason}; it never served since the supervisor started — check its command, arguments and configuration`;
    return { state: { ...base, phase: 'failed', failure }, effects: [...stopIt, { type: 'gaveUp', reason: failure }] };
  }
  const failures = [...state.failures.filter((t) => now - t < policy.windowMs), now];
  if (policy.policy === 'never' || failures.length > policy.maxFailures) {
    const failure =
      policy.policy === 'never'
        ? `${reason}; the restart policy is "never"`
        : `${reason}; ${failures.length} failures within ${policy.windowMs} ms is a crash loop (limit ${policy.maxFailures}); fix the daemon and restart the supervisor`;
    return { state: { ...base, failures, phase: 'failed', failure }, effects: [...stopIt, { type: 'gaveUp', reason: failure }] };
  }
  const delayMs = Math.min(policy.initialDelayMs * 2 ** (failures.length - 1), policy.maxDelayMs);
  const restarting: LifecycleState = { ...base, failures, phase: 'restarting', restarts: state.restarts + 1 };
  const scheduled: LifecycleEffect = { type: 'restartScheduled', reason, delayMs, failuresInWindow: failures.length };
  if (unusable !== undefined) return { state: { ...restarting, awaitingExit: { pid: unusable, delayMs } }, effects: [scheduled, ...stopIt] };
  return { state: restarting, effects: [scheduled, { type: 'setTimer', timer: 'restart', ms: delayMs }] };
}

function stop(state: LifecycleState, graceMs: number): Result {
  return {
    state: { ...state, phase: 'stopping', stopPending: null, startingPid: null },
    effects: [{ type: 'cancelTimer', timer: 'restart' }, { type: 'stopAll', graceMs }],
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
      return reject(ErrorCode.InProgress, 'a handoff is in progress; wait for its outcome before starting another');
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
  switch (outcome) {
    case 'committed':
    case 'promoted': {
      const committed: LifecycleState = { ...base, program: handoff.program };
      if (handoff.successorPid !== null && handoff.successorAlive) {
        const r = serve(committed, handoff.successorPid, '', now, 'handoff', false);
        return {
          state: { ...r.state, settling: { requestId: handoff.requestId, pid: handoff.successorPid, after: 'commit' } },
          effects: [...r.effects, { type: 'openSession', pid: handoff.successorPid }],
        };
      }
      const why = handoff.successorPid === null ? 'the handoff committed, but no successor process is known' : `the new daemon (pid ${handoff.successorPid}) died right after the commit point`;
      return then({ state: committed, effects: [answer(null, `${why}; the supervisor restarts the committed program`)] }, (s) => died(s, why, now));
    }
    case 'rolledBack': {
      if (handoff.incumbentAlive && state.daemon) {
        const pid = state.daemon.pid;
        return {
          state: { ...base, daemon: { ...state.daemon, session: false }, settling: { requestId: handoff.requestId, pid, after: 'rollback' } },
          effects: [{ type: 'openSession', pid }],
        };
      }
      const why = 'the incumbent died during the handoff, which rolled back';
      return then({ state: base, effects: [answer(null, `${why}; the supervisor restarts it`)] }, (s) => died(s, why, now));
    }
    case 'coldStart': {
      const why = 'the incumbent died during the handoff and the successor could not take over';
      return then({ state: base, effects: [answer(null, `${why}; the supervisor starts the daemon afresh`)] }, (s) => died(s, why, now));
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
      if (state.stopPending !== null) {
        // A stop waited for recovery: stop what it adopted, if anything (it is no child).
        const adopted: ServingDaemon | null = event.adopted ? { pid: event.adopted.pid, buildId: event.adopted.buildId, generation: state.generation, since: event.now, adopted: true, session: true } : null;
        return stop({ ...state, daemon: adopted }, state.stopPending);
      }
      if (event.adopted) return serve(state, event.adopted.pid, event.adopted.buildId, event.now, 'adopted', true);
      return { state: { ...state, phase: 'starting', startingPid: null }, effects: [{ type: 'coldStart', program: state.program }] };
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
              : `the new daemon (pid ${event.pid}) died right after the commit point (${event.reason}); the supervisor restarts the committed program`;
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
      if (state.phase !== 'serving' || !state.daemon?.session) return noHandoff(state, event.requestId);
      const handoff: LifecycleHandoff = { requestId: event.requestId, program: changeProgram(state.program, event.change), successorPid: null, successorAlive: false, incumbentAlive: true };
      return { state: { ...state, phase: 'handingOff', handoff }, effects: [{ type: 'runHandoff', requestId: event.requestId, program: handoff.program }] };
    }

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
      // A restart begins like a start: a live daemon that holds the lock and answers (say,
      // an incumbent that resumed on its own while its successor died) is adopted, not
      // fought over with a second one.
      if (state.phase !== 'restarting' || state.awaitingExit) return same(state);
      return { state: { ...state, phase: 'recovering' }, effects: [{ type: 'recover' }] };

    default:
      return assertNever(event, 'event');
  }
}
