import { describe, expect, it } from 'vitest';
import { changeProgram, initialLifecycleState, lifecycleTransition } from './lifecycle-machine.js';
import type { DaemonProgram, LifecycleEffect, LifecycleEvent, LifecyclePhase, LifecycleState } from './lifecycle-machine.js';
import { describeTable, reach } from './transition-table.fixture.js';

const PROGRAM: DaemonProgram = { command: '/usr/bin/node', args: ['v1.js'], env: { KV_DATA_DIR: '/var/lib/kv' }, cwd: null };
const INCUMBENT = 200;
const SUCCESSOR = 300;
const COLD = 400;

const EVENTS: Record<string, LifecycleEvent> = {
  start: { type: 'start', now: 1 },
  'recovered+': { type: 'recovered', adopted: { pid: INCUMBENT, buildId: 'v1' }, now: 2 },
  recovered0: { type: 'recovered', adopted: null, now: 2 },
  recoveryFailed: { type: 'recoveryFailed', reason: 'cannot open the lock file', now: 2 },
  coldSpawned: { type: 'coldSpawned', pid: COLD },
  coldStartFailed: { type: 'coldStartFailed', pid: COLD, reason: 'exit 3', now: 3 },
  'opened:I': { type: 'sessionOpened', pid: INCUMBENT, buildId: 'v1', now: 3 },
  'opened:S': { type: 'sessionOpened', pid: SUCCESSOR, buildId: 'v2', now: 3 },
  'opened:C': { type: 'sessionOpened', pid: COLD, buildId: 'v1', now: 3 },
  'lost:I': { type: 'sessionLost', pid: INCUMBENT },
  'failed:I': { type: 'sessionFailed', pid: INCUMBENT, reason: 'no answer', now: 3 },
  'exited:I': { type: 'daemonExited', pid: INCUMBENT, reason: 'SIGKILL', now: 4 },
  'exited:S': { type: 'daemonExited', pid: SUCCESSOR, reason: 'SIGKILL', now: 4 },
  'exited:C': { type: 'daemonExited', pid: COLD, reason: 'exit 4', now: 4 },
  'exited:X': { type: 'daemonExited', pid: 999, reason: 'exit 0', now: 4 },
  request: { type: 'handoffRequested', requestId: 1, change: { args: ['v2.js'] }, now: 5 },
  successorSpawned: { type: 'successorSpawned', requestId: 1, pid: SUCCESSOR },
  'F:committed': { type: 'handoffFinished', requestId: 1, outcome: 'committed', now: 6 },
  'F:promoted': { type: 'handoffFinished', requestId: 1, outcome: 'promoted', now: 6 },
  'F:rolledBack': { type: 'handoffFinished', requestId: 1, outcome: 'rolledBack', now: 6 },
  'F:coldStart': { type: 'handoffFinished', requestId: 1, outcome: 'coldStart', now: 6 },
  stop: { type: 'stopRequested', graceMs: 30_000, now: 7 },
  stopped: { type: 'stopped' },
  'T:restart': { type: 'timeout', timer: 'restart', now: 8 },
  'health:I': { type: 'healthFailed', pid: INCUMBENT, reason: 'GET /health answered 500, 3 times in a row', now: 9 },
  'health:S': { type: 'healthFailed', pid: SUCCESSOR, reason: 'GET /health answered 500, 3 times in a row', now: 9 },
  'T:probation': { type: 'timeout', timer: 'probation', now: 10 },
  reconfigured: { type: 'reconfigured', policy: { maxFailures: 2 }, probationMs: 5_000 },
};

const drive = (...keys: string[]): LifecycleState => reach(initialLifecycleState(PROGRAM), lifecycleTransition, EVENTS, keys);
/** With a probation window of 10 s: v1 is adopted and proves good, then v2 commits and is on probation. */
const PROBATION_MS = 10_000;
const driveP = (...keys: string[]): LifecycleState => reach(initialLifecycleState(PROGRAM, {}, PROBATION_MS), lifecycleTransition, EVENTS, keys);
const ON_PROBATION = ['start', 'recovered+', 'T:probation', 'request', 'successorSpawned', 'F:committed', 'opened:S'];
const SERVING = ['start', 'recovered+'];
const HANDING_OFF = [...SERVING, 'request'];

const STATES = {
  created: drive(),
  recovering: drive('start'),
  'recovering/stopPending': drive('start', 'stop'),
  starting: drive('start', 'recovered0'),
  'starting/spawned': drive('start', 'recovered0', 'coldSpawned'),
  'starting/restart': drive(...SERVING, 'exited:I', 'T:restart', 'recovered0', 'coldSpawned'),
  serving: drive(...SERVING),
  'serving/reopening': drive(...SERVING, 'lost:I'),
  'serving/settling': drive(...HANDING_OFF, 'successorSpawned', 'F:committed'),
  handingOff: drive(...HANDING_OFF),
  'handingOff/spawned': drive(...HANDING_OFF, 'successorSpawned'),
  'handingOff/successorDead': drive(...HANDING_OFF, 'successorSpawned', 'exited:S'),
  'handingOff/incumbentDead': drive(...HANDING_OFF, 'successorSpawned', 'exited:I'),
  'handingOff/stopPending': drive(...HANDING_OFF, 'successorSpawned', 'stop'),
  restarting: drive(...SERVING, 'exited:I'),
  'restarting/awaitingExit': drive(...SERVING, 'lost:I', 'failed:I'),
  failed: reach(initialLifecycleState(PROGRAM, { policy: 'never' }), lifecycleTransition, EVENTS, [...SERVING, 'exited:I']),
  stopping: drive(...SERVING, 'stop'),
  stopped: drive(...SERVING, 'stop', 'stopped'),
  'serving/probation': driveP(...ON_PROBATION),
  'serving/probationNoFallback': driveP('start', 'recovered+'),
  'handingOff/revert': driveP(...ON_PROBATION, 'health:S'),
} satisfies Record<string, LifecycleState>;

describeTable({
  machine: 'lifecycle',
  phases: ['created', 'recovering', 'starting', 'serving', 'handingOff', 'restarting', 'failed', 'stopping', 'stopped'] satisfies LifecyclePhase[],
  states: STATES,
  events: EVENTS,
  transition: lifecycleTransition,
  onViolation: (r) => {
    // A violation is a bug of the driver: reported, and nothing is done about it.
    expect(r.effects).toEqual([]);
  },
  onIgnored: (r, column) => {
    // Staying in a phase may answer a request, reopen a session, record a death or stop an
    // adopted daemon; it never starts a daemon or a handoff.
    expect(r.effects.filter((e) => e.type === 'coldStart' || e.type === 'runHandoff' || e.type === 'recover'), column).toEqual([]);
  },
});

describe('lifecycle machine: decisions', () => {
  const run = (state: LifecycleState, ...events: LifecycleEvent[]) => {
    let s = state;
    const effects: LifecycleEffect[] = [];
    for (const e of events) {
      const r = lifecycleTransition(s, e);
      expect(r.violation?.message).toBeUndefined();
      s = r.state;
      effects.push(...r.effects);
    }
    return { state: s, effects };
  };
  const of = <T extends LifecycleEffect['type']>(effects: readonly LifecycleEffect[], type: T) => effects.filter((e): e is Extract<LifecycleEffect, { type: T }> => e.type === type);
  const S = STATES;

  it('reports a first daemon that never serves as a start-up failure, without restarting it', () => {
    const r = run(S['starting/spawned'], EVENTS['exited:C'] as LifecycleEvent);
    expect(r.state.phase).toBe('failed');
    expect(r.state.failure).toMatch(/died: exit 4; it never served since the supervisor started — check its command/);
    expect(of(r.effects, 'restartScheduled')).toEqual([]);
  });

  it('reports a recovery that cannot look at the data directory as the reason it did not start', () => {
    const r = run(S.recovering, EVENTS.recoveryFailed as LifecycleEvent);
    expect(r.state).toMatchObject({ phase: 'failed', failure: expect.stringMatching(/^recovery failed: cannot open the lock file; it never served/) });
  });

  it('adopts what recovery found, or cold-starts the configured program', () => {
    expect(run(S.recovering, EVENTS['recovered+'] as LifecycleEvent).state.daemon).toMatchObject({ pid: INCUMBENT, adopted: true, session: true, generation: 1 });
    expect(run(S.recovering, EVENTS.recovered0 as LifecycleEvent).effects).toEqual([{ type: 'coldStart', program: PROGRAM }]);
  });

  it('runs a handoff with the changed program: command, args and cwd replace, env entries are set over the current ones', () => {
    const r = run(S.serving, { type: 'handoffRequested', requestId: 7, change: { args: ['v2.js'], env: { BUILD: '2' } }, now: 5 });
    expect(of(r.effects, 'runHandoff')).toEqual([{ type: 'runHandoff', requestId: 7, program: { ...PROGRAM, args: ['v2.js'], env: { KV_DATA_DIR: '/var/lib/kv', BUILD: '2' } } }]);
    expect(changeProgram(PROGRAM, { command: '/opt/node', cwd: '/srv' })).toEqual({ ...PROGRAM, command: '/opt/node', cwd: '/srv' });
  });

  it('refuses a handoff while another runs or while restarting, with a code and what to do', () => {
    const reject = (state: LifecycleState) => of(run(state, { type: 'handoffRequested', requestId: 9, change: {}, now: 5 }).effects, 'rejectHandoff')[0];
    expect(reject(S.handingOff)).toMatchObject({ requestId: 9, code: 'HANDOFF_IN_PROGRESS', message: expect.stringMatching(/wait for its outcome/) });
    expect(reject(S.restarting)).toMatchObject({ code: 'HANDOFF_NO_INCUMBENT', message: expect.stringMatching(/being restarted/) });
    expect(reject(S['serving/reopening'])).toMatchObject({ code: 'HANDOFF_NO_INCUMBENT', message: expect.stringMatching(/reopening its session/) });
  });

  it('after a commit, answers the request once the new daemon answers, and makes it the serving daemon', () => {
    const committed = S['serving/settling'];
    expect(committed.daemon).toMatchObject({ pid: SUCCESSOR, session: false, generation: 2 });
    expect(committed.program.args).toEqual(['v2.js']);
    const r = run(committed, EVENTS['opened:S'] as LifecycleEvent);
    expect(of(r.effects, 'handoffSettled')).toEqual([{ type: 'handoffSettled', requestId: 1, servingPid: SUCCESSOR, aftermath: null }]);
    expect(r.state.daemon).toMatchObject({ pid: SUCCESSOR, session: true, buildId: 'v2' });
  });

  for (const [when, state, event] of [
    ['before the handoff machine decided', S['handingOff/spawned'], [EVENTS['exited:S'], EVENTS['F:committed']]],
    ['after it decided, before the new daemon answered', S['serving/settling'], [EVENTS['exited:S']]],
  ] as const) {
    it(`restarts the committed program when the new daemon dies after the commit point, ${when}`, () => {
      const r = run(state, ...(event as readonly LifecycleEvent[]));
      expect(r.state).toMatchObject({ phase: 'restarting', daemon: null, restarts: 1 });
      expect(r.state.program.args).toEqual(['v2.js']);
      expect(of(r.effects, 'handoffSettled')).toEqual([{ type: 'handoffSettled', requestId: 1, servingPid: null, aftermath: expect.stringMatching(/died right after the commit point.*restarts the committed program/) }]);
      const restart = run(r.state, EVENTS['T:restart'] as LifecycleEvent, EVENTS.recovered0 as LifecycleEvent);
      expect(restart.effects).toContainEqual({ type: 'coldStart', program: { ...PROGRAM, args: ['v2.js'] } });
    });
  }

  it('keeps the old program and its daemon when the handoff rolls back; restarts the old program if the incumbent died', () => {
    const back = run(S['handingOff/spawned'], EVENTS['F:rolledBack'] as LifecycleEvent, EVENTS['opened:I'] as LifecycleEvent);
    expect(back.state).toMatchObject({ phase: 'serving', program: PROGRAM, daemon: { pid: INCUMBENT, session: true, generation: 1 } });
    expect(of(back.effects, 'openSession')).toEqual([{ type: 'openSession', pid: INCUMBENT }]);
    expect(of(back.effects, 'handoffSettled')).toEqual([{ type: 'handoffSettled', requestId: 1, servingPid: INCUMBENT, aftermath: null }]);
    const dead = run(S['handingOff/incumbentDead'], EVENTS['F:rolledBack'] as LifecycleEvent);
    expect(dead.state).toMatchObject({ phase: 'restarting', program: PROGRAM });
  });

  it('doubles the restart delay with each death in the window, and gives up on a crash loop', () => {
    let state = run(initialLifecycleState(PROGRAM, { initialDelayMs: 100, maxDelayMs: 1_000, maxFailures: 5, windowMs: 60_000 }), EVENTS.start as LifecycleEvent, EVENTS['recovered+'] as LifecycleEvent).state;
    const delays: number[] = [];
    let pid = INCUMBENT;
    for (let i = 0; i < 6; i++) {
      const r = run(state, { type: 'daemonExited', pid, reason: 'exit 4', now: 1_000 * i });
      delays.push(...of(r.effects, 'restartScheduled').map((e) => e.delayMs));
      if (r.state.phase === 'failed') {
        expect(r.state.failure).toMatch(/6 failures within 60000 ms is a crash loop \(limit 5\), and no other known-good version is left to fall back to; fix the daemon, then "handoffctl upgrade" starts it/);
        expect(of(r.effects, 'gaveUp')).toHaveLength(1);
        state = r.state;
        break;
      }
      pid += 1;
      state = run(r.state, EVENTS['T:restart'] as LifecycleEvent, EVENTS.recovered0 as LifecycleEvent, { type: 'coldSpawned', pid }, { type: 'sessionOpened', pid, buildId: 'v1', now: 1_000 * i + 1 }).state;
    }
    expect(delays).toEqual([100, 200, 400, 800, 1_000]);
    expect(state.phase).toBe('failed');
  });

  it('forgets deaths older than the window', () => {
    const policy = { initialDelayMs: 100, windowMs: 10_000 };
    let state = run(initialLifecycleState(PROGRAM, policy), EVENTS.start as LifecycleEvent, EVENTS['recovered+'] as LifecycleEvent).state;
    state = run(state, { type: 'daemonExited', pid: INCUMBENT, reason: 'x', now: 0 }, EVENTS['T:restart'] as LifecycleEvent, EVENTS.recovered0 as LifecycleEvent, { type: 'coldSpawned', pid: 401 }, { type: 'sessionOpened', pid: 401, buildId: '', now: 1 }).state;
    const late = run(state, { type: 'daemonExited', pid: 401, reason: 'x', now: 20_000 });
    expect(of(late.effects, 'restartScheduled')[0]).toMatchObject({ delayMs: 100, failuresInWindow: 1 });
  });

  it('a restart adopts a live daemon that holds the lock instead of starting a second one', () => {
    const r = run(S.restarting, EVENTS['T:restart'] as LifecycleEvent, { type: 'recovered', adopted: { pid: 555, buildId: 'v1' }, now: 9 });
    expect(r.effects.filter((e) => e.type === 'coldStart')).toEqual([]);
    expect(r.state).toMatchObject({ phase: 'serving', daemon: { pid: 555, adopted: true } });
  });

  it('stops an unusable live daemon that never answers, and starts the backoff only once it exited', () => {
    const r = run(S['serving/reopening'], EVENTS['failed:I'] as LifecycleEvent);
    expect(of(r.effects, 'stopDaemon')).toEqual([{ type: 'stopDaemon', pid: INCUMBENT, reason: expect.stringMatching(/alive but does not answer/) }]);
    expect(of(r.effects, 'setTimer')).toEqual([]);
    expect(r.state).toMatchObject({ phase: 'restarting', awaitingExit: { pid: INCUMBENT, delayMs: 100 } });
    expect(run(r.state, EVENTS['exited:X'] as LifecycleEvent).effects).toEqual([]);
    expect(run(r.state, EVENTS['exited:I'] as LifecycleEvent).effects).toEqual([{ type: 'setTimer', timer: 'restart', ms: 100 }]);
  });

  it('stops a cold-started daemon that never answers before the backoff', () => {
    const r = run(S['starting/restart'], EVENTS.coldStartFailed as LifecycleEvent);
    expect(of(r.effects, 'stopDaemon')).toEqual([{ type: 'stopDaemon', pid: COLD, reason: expect.stringMatching(/could not start/) }]);
    expect(r.state.awaitingExit).toEqual({ pid: COLD, delayMs: 200 });
  });

  it('answers every handoff request, in every phase: a run, a cold start when nothing serves, or a refusal', () => {
    for (const [row, state] of Object.entries(STATES)) {
      const r = lifecycleTransition(state, { type: 'handoffRequested', requestId: 77, change: {}, now: 9 });
      const answers = r.effects.filter((e) => (e.type === 'runHandoff' || e.type === 'rejectHandoff') && e.requestId === 77);
      if (state.phase === 'failed') expect(r.state.coldRequest, row).toBe(77);
      else expect(answers, row).toHaveLength(1);
    }
  });

  it('a stop during recovery waits for it, then stops what it adopted', () => {
    const r = run(S['recovering/stopPending'], EVENTS['recovered+'] as LifecycleEvent);
    expect(r.state).toMatchObject({ phase: 'stopping', daemon: { pid: INCUMBENT, adopted: true } });
    expect(of(r.effects, 'stopAll')).toEqual([{ type: 'stopAll', graceMs: 30_000 }]);
  });

  it('a stop during a handoff waits for it, answers its request, then stops whatever serves', () => {
    const r = run(S['handingOff/stopPending'], EVENTS['F:committed'] as LifecycleEvent);
    expect(r.effects.map((e) => e.type)).toEqual(['serving', 'handoffSettled', 'cancelTimer', 'stopAll']);
    expect(of(r.effects, 'handoffSettled')[0]).toMatchObject({ servingPid: SUCCESSOR });
    expect(run(r.state, EVENTS.stopped as LifecycleEvent).state.phase).toBe('stopped');
  });

  describe('versions and probation', () => {
    const V2 = { ...PROGRAM, args: ['v2.js'] };
    const REVERT_ID = -1;
    const NEW = 301;

    it('puts a committed version on probation; it proves good when the window ends, and the old one stays the fallback', () => {
      const p = S['serving/probation'];
      expect(p).toMatchObject({ program: V2, programGood: false, lastGood: PROGRAM, probation: { pid: SUCCESSOR, until: 6 + PROBATION_MS } });
      const passed = run(p, EVENTS['T:probation'] as LifecycleEvent);
      expect(passed.state).toMatchObject({ programGood: true, lastGood: PROGRAM, probation: null, lastProbation: { pid: SUCCESSOR, outcome: 'passed' } });
      expect(of(passed.effects, 'probationEnded')).toEqual([{ type: 'probationEnded', pid: SUCCESSOR, outcome: 'passed', reason: null }]);
    });

    it('an old version still on probation is the fallback when nothing older proved good', () => {
      expect(driveP('start', 'recovered+', 'request', 'successorSpawned', 'F:committed')).toMatchObject({ program: V2, lastGood: PROGRAM });
    });

    it('a handoff request may set its own probation window', () => {
      const r = run(driveP('start', 'recovered+', 'T:probation'), { type: 'handoffRequested', requestId: 1, change: { args: ['v2.js'] }, now: 5, probationMs: 777 }, EVENTS.successorSpawned as LifecycleEvent, EVENTS['F:committed'] as LifecycleEvent);
      expect(of(r.effects, 'probationStarted')).toEqual([{ type: 'probationStarted', pid: SUCCESSOR, ms: 777 }]);
    });

    it('reverts by an ordinary handoff to the last known good version when the health check fails on probation', () => {
      const r = run(S['serving/probation'], EVENTS['health:S'] as LifecycleEvent);
      expect(r.state.phase).toBe('handingOff');
      expect(of(r.effects, 'revert')).toEqual([{ type: 'revert', how: 'handoff', from: V2, to: PROGRAM, reason: expect.stringMatching(/failed on probation: GET \/health answered 500/) }]);
      expect(of(r.effects, 'runHandoff')).toEqual([{ type: 'runHandoff', requestId: REVERT_ID, program: PROGRAM }]);
      const back = run(r.state, { type: 'successorSpawned', requestId: REVERT_ID, pid: NEW }, { type: 'handoffFinished', requestId: REVERT_ID, outcome: 'committed', now: 11 }, { type: 'sessionOpened', pid: NEW, buildId: 'v1', now: 12 });
      expect(back.state).toMatchObject({ phase: 'serving', program: PROGRAM, programGood: true, lastGood: null, probation: null, daemon: { pid: NEW, generation: 3 } });
      expect(back.state.lastProbation).toMatchObject({ pid: SUCCESSOR, outcome: 'reverted' });
      expect(back.state.lastRevert).toMatchObject({ from: V2, to: PROGRAM });
      expect(of(back.effects, 'probationStarted')).toEqual([]);
    });

    it('a revert that rolls back leaves the new version serving, its probation failed', () => {
      const r = run(S['handingOff/revert'], { type: 'successorSpawned', requestId: REVERT_ID, pid: NEW }, { type: 'handoffFinished', requestId: REVERT_ID, outcome: 'rolledBack', now: 11 });
      expect(r.state).toMatchObject({ phase: 'serving', program: V2, programGood: false, probation: null, daemon: { pid: SUCCESSOR } });
      expect(r.state.lastProbation).toMatchObject({ outcome: 'failed', reason: expect.stringMatching(/reverting to the last known good version failed: the handoff rolled back/) });
    });

    it('a probation window that ends while the revert runs does not make the failing version good', () => {
      const during = run(S['handingOff/revert'], EVENTS['T:probation'] as LifecycleEvent);
      expect(during.state).toMatchObject({ programGood: false, probation: { pid: SUCCESSOR } });
      expect(during.state.lastProbation?.pid).toBe(INCUMBENT); // v1's, from before
      const back = run(during.state, { type: 'successorSpawned', requestId: REVERT_ID, pid: NEW }, { type: 'handoffFinished', requestId: REVERT_ID, outcome: 'rolledBack', now: 11 });
      expect(back.state).toMatchObject({ programGood: false, lastGood: PROGRAM, lastProbation: { outcome: 'failed' } });
    });

    it('the deaths of the version before do not count against the last known good one restarted in place of a new version', () => {
      let state = driveP('start', 'recovered+', 'T:probation');
      // v1 died four times in the window (limit 5) before v2 came.
      let pid = INCUMBENT;
      for (let i = 0; i < 4; i++) {
        state = run(state, { type: 'daemonExited', pid, reason: 'exit 4', now: 20 + i }, EVENTS['T:restart'] as LifecycleEvent, EVENTS.recovered0 as LifecycleEvent, { type: 'coldSpawned', pid: pid + 1 }, { type: 'sessionOpened', pid: pid + 1, buildId: 'v1', now: 20 + i }).state;
        pid += 1;
      }
      state = run(state, { type: 'handoffRequested', requestId: 1, change: { args: ['v2.js'] }, now: 30 }, { type: 'successorSpawned', requestId: 1, pid: SUCCESSOR }, { type: 'handoffFinished', requestId: 1, outcome: 'committed', now: 31 }, EVENTS['opened:S'] as LifecycleEvent).state;
      const r = run(state, { type: 'daemonExited', pid: SUCCESSOR, reason: 'exit 4', now: 40 });
      expect(r.state).toMatchObject({ phase: 'restarting', program: PROGRAM, failures: [40] });
      expect(of(r.effects, 'gaveUp')).toEqual([]);
    });

    it('a failing health check with no known-good version to revert to is reported; the version serves on', () => {
      const r = run(S['serving/probationNoFallback'], EVENTS['health:I'] as LifecycleEvent);
      expect(r.state).toMatchObject({ phase: 'serving', probation: null, lastProbation: { outcome: 'failed', reason: expect.stringMatching(/no other known-good version to revert to/) } });
      expect(of(r.effects, 'runHandoff')).toEqual([]);
    });

    it('a new version that dies on probation is replaced by the last known good one', () => {
      const r = run(S['serving/probation'], EVENTS['exited:S'] as LifecycleEvent);
      expect(r.state).toMatchObject({ phase: 'restarting', program: PROGRAM, programGood: true, lastProbation: { outcome: 'reverted' } });
      expect(of(r.effects, 'revert')).toEqual([expect.objectContaining({ how: 'restart', from: V2, to: PROGRAM })]);
      const restart = run(r.state, EVENTS['T:restart'] as LifecycleEvent, EVENTS.recovered0 as LifecycleEvent);
      expect(restart.effects).toContainEqual({ type: 'coldStart', program: PROGRAM });
    });

    it('a new version that dies right after the commit point, before it could serve, is replaced by the last known good one', () => {
      const r = run(driveP('start', 'recovered+', 'T:probation', 'request', 'successorSpawned', 'exited:S'), EVENTS['F:committed'] as LifecycleEvent);
      expect(r.state).toMatchObject({ phase: 'restarting', program: PROGRAM });
      expect(of(r.effects, 'handoffSettled')[0]?.aftermath).toMatch(/restarts the last known good version/);
    });

    it('a crash loop falls back to the last known good version; with none left, it gives up and says so', () => {
      let state = run(initialLifecycleState(PROGRAM, { maxFailures: 1 }), EVENTS.start as LifecycleEvent, EVENTS['recovered+'] as LifecycleEvent, EVENTS.request as LifecycleEvent, EVENTS.successorSpawned as LifecycleEvent, EVENTS['F:committed'] as LifecycleEvent, EVENTS['opened:S'] as LifecycleEvent).state;
      expect(state).toMatchObject({ program: V2, programGood: true, lastGood: PROGRAM });
      const deaths: LifecycleEffect[] = [];
      let pid = SUCCESSOR;
      for (let i = 0; i < 4 && state.phase !== 'failed'; i++) {
        const r = run(state, { type: 'daemonExited', pid, reason: 'exit 4', now: 100 * i });
        deaths.push(...r.effects);
        state = r.state;
        if (state.phase === 'failed') break;
        pid += 10;
        state = run(state, EVENTS['T:restart'] as LifecycleEvent, EVENTS.recovered0 as LifecycleEvent, { type: 'coldSpawned', pid }, { type: 'sessionOpened', pid, buildId: '', now: 100 * i + 1 }).state;
        if (i === 1) expect(state.program).toEqual(PROGRAM);
      }
      expect(of(deaths, 'revert')).toEqual([expect.objectContaining({ how: 'restart', from: V2, to: PROGRAM, reason: expect.stringMatching(/crash loop.*falling back to the last known good version/) })]);
      expect(state.phase).toBe('failed');
      expect(state.failure).toMatch(/no other known-good version is left/);
      // Started again, the program that crash-looped is on probation, not taken as good.
      expect(state.programGood).toBe(false);
    });

    it('no dead end: a handoff asked for after giving up starts the program afresh, and is answered once it serves or fails', () => {
      const r = run(S.failed, { type: 'handoffRequested', requestId: 5, change: { args: ['v3.js'] }, now: 20 });
      expect(r.effects).toEqual([{ type: 'coldStart', program: { ...PROGRAM, args: ['v3.js'] } }]);
      const up = run(r.state, { type: 'coldSpawned', pid: 700 }, { type: 'sessionOpened', pid: 700, buildId: 'v3', now: 21 });
      expect(up.state).toMatchObject({ phase: 'serving', failure: null, daemon: { pid: 700 } });
      expect(of(up.effects, 'handoffSettled')).toEqual([{ type: 'handoffSettled', requestId: 5, servingPid: 700, aftermath: null, coldStart: true }]);
      const down = run(r.state, { type: 'coldSpawned', pid: 700 }, { type: 'daemonExited', pid: 700, reason: 'exit 1', now: 21 });
      expect(down.state.phase).toBe('failed');
      expect(of(down.effects, 'handoffSettled')).toEqual([{ type: 'handoffSettled', requestId: 5, servingPid: null, aftermath: expect.stringMatching(/died: exit 1; it never served/), coldStart: true }]);
      expect(of(down.effects, 'restartScheduled')).toEqual([]);
    });

    it('takes the versions a previous supervisor journaled: the program, the fallback, the generation and, for the same daemon, its start of service', () => {
      const versions = { program: V2, programGood: true, lastGood: PROGRAM, generation: 4, servingSince: 1_000 };
      const adopted = run(S.recovering, { type: 'recovered', adopted: { pid: INCUMBENT, buildId: 'v2' }, now: 9_000, versions });
      expect(adopted.state).toMatchObject({ program: V2, lastGood: PROGRAM, generation: 4, daemon: { pid: INCUMBENT, generation: 4, since: 1_000 } });
      const cold = run(S.recovering, { type: 'recovered', adopted: null, now: 9_000, versions: { ...versions, servingSince: null } });
      expect(cold.effects).toEqual([{ type: 'coldStart', program: V2 }]);
    });

    it('a reload changes the restart policy and the probation window', () => {
      const r = run(S.serving, EVENTS.reconfigured as LifecycleEvent);
      expect(r.state).toMatchObject({ probationMs: 5_000, policy: { maxFailures: 2, initialDelayMs: 100 } });
    });
  });

  it('never names a dead daemon as the serving one', () => {
    for (const [row, state] of Object.entries(STATES)) {
      for (const pid of [INCUMBENT, SUCCESSOR, COLD]) {
        const r = lifecycleTransition(state, { type: 'daemonExited', pid, reason: 'SIGKILL', now: 99 });
        expect(r.state.daemon?.pid, `${row} after ${pid} died`).not.toBe(pid);
      }
    }
  });
});
