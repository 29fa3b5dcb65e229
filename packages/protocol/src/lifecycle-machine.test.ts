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
};

const drive = (...keys: string[]): LifecycleState => reach(initialLifecycleState(PROGRAM), lifecycleTransition, EVENTS, keys);
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
} satisfies Record<string, LifecycleState>;

// The expected phase after every (state, event) pair; cells as in transition-table.fixture.ts.
const TABLE: Record<keyof typeof STATES, string> = {
  //                      start rec+ rec0 recFailed coldSpawned coldFailed | opened:I opened:S opened:C lost:I failed:I | exited:I exited:S exited:C exited:X | request succSpawned | F:committed F:promoted F:rolledBack F:coldStart | stop stopped T:restart
  created:                    `recovering ! ! ! = = | = = = = = | = = = = | = ! | ! ! ! ! | stopped ! =`,
  recovering:                 `! serving starting failed = = | = = = = = | = = = = | = ! | ! ! ! ! | = ! =`,
  'recovering/stopPending':   `! stopping stopping stopping = = | = = = = = | = = = = | = ! | ! ! ! ! | = ! =`,
  starting:                   `! ! ! ! = = | = = = = = | = = = = | = ! | ! ! ! ! | stopping ! =`,
  'starting/spawned':         `! ! ! ! = failed | = = serving = = | = = failed = | = ! | ! ! ! ! | stopping ! =`,
  'starting/restart':         `! ! ! ! = restarting | = = serving = = | = = restarting = | = ! | ! ! ! ! | stopping ! =`,
  serving:                    `! ! ! ! = = | = = = = restarting | restarting = = = | handingOff ! | ! ! ! ! | stopping ! =`,
  'serving/reopening':        `! ! ! ! = = | = = = = restarting | restarting = = = | = ! | ! ! ! ! | stopping ! =`,
  'serving/settling':         `! ! ! ! = = | = = = = = | = restarting = = | = ! | ! ! ! ! | stopping ! =`,
  handingOff:                 `! ! ! ! = = | = = = = = | = = = = | = = | restarting restarting serving restarting | = ! =`,
  'handingOff/spawned':       `! ! ! ! = = | = = = = = | = = = = | = = | serving serving serving restarting | = ! =`,
  'handingOff/successorDead': `! ! ! ! = = | = = = = = | = = = = | = = | restarting restarting serving restarting | = ! =`,
  'handingOff/incumbentDead': `! ! ! ! = = | = = = = = | = = = = | = = | serving serving restarting restarting | = ! =`,
  'handingOff/stopPending':   `! ! ! ! = = | = = = = = | = = = = | = = | stopping stopping stopping stopping | = ! =`,
  restarting:                 `! ! ! ! = = | = = = = = | = = = = | = ! | ! ! ! ! | stopping ! recovering`,
  'restarting/awaitingExit':  `! ! ! ! = = | = = = = = | = = = = | = ! | ! ! ! ! | stopping ! =`,
  failed:                     `! ! ! ! = = | = = = = = | = = = = | = ! | ! ! ! ! | stopping ! =`,
  stopping:                   `! ! ! ! = = | = = = = = | = = = = | = ! | ! ! ! ! | = stopped =`,
  stopped:                    `! = = = = = | = = = = = | = = = = | = = | = = = = | = = =`,
};

describeTable({
  machine: 'lifecycle',
  phases: ['created', 'recovering', 'starting', 'serving', 'handingOff', 'restarting', 'failed', 'stopping', 'stopped'] satisfies LifecyclePhase[],
  states: STATES,
  events: EVENTS,
  table: TABLE,
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

  it('refuses a handoff while another runs, while restarting and after giving up, with a code and what to do', () => {
    const reject = (state: LifecycleState) => of(run(state, { type: 'handoffRequested', requestId: 9, change: {}, now: 5 }).effects, 'rejectHandoff')[0];
    expect(reject(S.handingOff)).toMatchObject({ requestId: 9, code: 'HANDOFF_IN_PROGRESS', message: expect.stringMatching(/wait for its outcome/) });
    expect(reject(S.restarting)).toMatchObject({ code: 'HANDOFF_NO_INCUMBENT', message: expect.stringMatching(/being restarted/) });
    expect(reject(S.failed)).toMatchObject({ code: 'HANDOFF_NO_INCUMBENT', message: expect.stringMatching(/gave up: .*restart policy is "never"/) });
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
        expect(r.state.failure).toMatch(/6 failures within 60000 ms is a crash loop \(limit 5\); fix the daemon and restart the supervisor/);
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

  it('answers every handoff request, in every phase: a run or a refusal', () => {
    for (const [row, state] of Object.entries(STATES)) {
      const r = lifecycleTransition(state, { type: 'handoffRequested', requestId: 77, change: {}, now: 9 });
      expect(r.effects.filter((e) => (e.type === 'runHandoff' || e.type === 'rejectHandoff') && e.requestId === 77), row).toHaveLength(1);
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


  it('never names a dead daemon as the serving one', () => {
    for (const [row, state] of Object.entries(STATES)) {
      for (const pid of [INCUMBENT, SUCCESSOR, COLD]) {
        const r = lifecycleTransition(state, { type: 'daemonExited', pid, reason: 'SIGKILL', now: 99 });
        expect(r.state.daemon?.pid, `${row} after ${pid} died`).not.toBe(pid);
      }
    }
  });
});
