import { describe, expect, it } from 'vitest';
import { incumbentTransition, initialIncumbentState } from './incumbent-machine.js';
import type { IncumbentEffect, IncumbentEvent, IncumbentPhase, IncumbentState } from './incumbent-machine.js';
import type { PrepareHandoff, ToDaemonMessage } from './messages.js';
import { Capability } from './negotiation.js';
import { describeTable, reach } from './transition-table.fixture.js';

const CONFIG = { pid: 200, buildId: 'v1', versions: { min: 1, max: 1 }, capabilities: Capability.SpawnHolder | Capability.Reload, heartbeatMs: 500, livenessMs: 3000 };
const MESSAGES: Record<ToDaemonMessage['type'], ToDaemonMessage> = {
  HelloAck: { type: 'HelloAck', version: 1, handoffId: null, capabilities: Capability.Reload },
  PrepareHandoff: { type: 'PrepareHandoff', handoffId: 'h1', successorPid: 300, deadlineMs: 1000, drainGraceMs: 100, cutWork: false, moveConns: false },
  SealRequest: { type: 'SealRequest', handoffId: 'h1' },
  Begin: { type: 'Begin', handoffId: 'h1', seal: null, state: null, conns: 0 },
  ConnOffer: { type: 'ConnOffer', handoffId: 'h1', connId: 1, listener: 'http', kind: 'http', leftover: new Uint8Array(0), state: null },
  Commit: { type: 'Commit', handoffId: 'h1' },
  Abort: { type: 'Abort', handoffId: 'h1', code: 'HANDOFF_CANCELLED', reason: 'x' },
  ResumeAfterAbort: { type: 'ResumeAfterAbort', handoffId: 'h1', reason: 'x' },
  Heartbeat: { type: 'Heartbeat', ts: 1 },
  SpawnHolder: { type: 'SpawnHolder', argv: ['/usr/bin/keeper'], cwd: '/', env: [] },
  Reload: { type: 'Reload', requestId: 1, target: 'plugin', name: 'validate', source: '' },
};
const EVENTS: Record<string, IncumbentEvent> = {
  sessionOpened: { type: 'sessionOpened' },
  sessionClosed: { type: 'sessionClosed', reason: 'EOF' },
  ...Object.fromEntries(Object.entries(MESSAGES).map(([t, message]) => [`M:${t}`, { type: 'message', message }])),
  drainDone: { type: 'drainDone', openConnsRemaining: 0, acceptClosed: true },
  drainFailed: { type: 'drainFailed', error: 'boom' },
  drainProgress: { type: 'drainProgress', progress: { pending: 1, kinds: ['job'], counts: [1], oldest: 'job 1: export', oldestMs: 900, leftMs: 20_000 } },
  connOffer: { type: 'connOffer', offer: { connId: 1, listener: 'http', kind: 'http', leftover: new Uint8Array(0), state: null } },
  sealProgress: { type: 'sealProgress', completed: 1, total: 3 },
  sealDone: { type: 'sealDone', report: { revisions: [5], fingerprint: 'f' } },
  sealFailed: { type: 'sealFailed', error: 'EIO' },
  lockReleased: { type: 'lockReleased' },
  resumed: { type: 'resumed' },
  resumeFailed: { type: 'resumeFailed', error: 'lock held by 300', lockTaken: true },
  'T:supervisorLiveness': { type: 'timeout', timer: 'supervisorLiveness', now: 1 },
  'T:heartbeat': { type: 'timeout', timer: 'heartbeat', now: 1 },
};

const drive = (...keys: string[]): IncumbentState => reach(initialIncumbentState(CONFIG), incumbentTransition, EVENTS, keys);
const OPEN = ['sessionOpened', 'M:HelloAck'];
const STATES: Record<string, IncumbentState> = {
  'serving/none': drive(),
  'serving/hello': drive('sessionOpened'),
  'serving/established': drive(...OPEN),
  draining: drive(...OPEN, 'M:PrepareHandoff'),
  drained: drive(...OPEN, 'M:PrepareHandoff', 'drainDone'),
  sealing: drive(...OPEN, 'M:PrepareHandoff', 'drainDone', 'M:SealRequest'),
  releasing: drive(...OPEN, 'M:PrepareHandoff', 'drainDone', 'M:SealRequest', 'sealDone'),
  sealed: drive(...OPEN, 'M:PrepareHandoff', 'drainDone', 'M:SealRequest', 'sealDone', 'lockReleased'),
  resuming: drive(...OPEN, 'M:PrepareHandoff', 'M:Abort'),
  'resuming/hello': drive(...OPEN, 'M:PrepareHandoff', 'sessionOpened'),
  committed: drive(...OPEN, 'M:PrepareHandoff', 'drainDone', 'M:SealRequest', 'sealDone', 'lockReleased', 'M:Commit'),
  exited: drive(...OPEN, 'M:PrepareHandoff', 'M:Abort', 'resumeFailed'),
};

describeTable({
  machine: 'incumbent',
  phases: ['serving', 'draining', 'drained', 'sealing', 'releasing', 'sealed', 'resuming', 'committed', 'exited'] satisfies IncumbentPhase[],
  states: STATES,
  events: EVENTS,
  transition: incumbentTransition,
  onViolation: (r) => {
    // A violation ends the session; mid-handoff the incumbent resumes on its own.
    expect(r.effects).toContainEqual({ type: 'closeSession' });
    expect(r.state.session).toBe('none');
  },
});

describe('incumbent machine: decisions', () => {
  const types = (effects: readonly IncumbentEffect[]) => effects.map((e) => (e.type === 'send' ? `send:${e.message.type}` : e.type));

  it('starts a listener holder only between handoffs, and only with the capability', () => {
    const asked = EVENTS['M:SpawnHolder'] as IncumbentEvent;
    expect(incumbentTransition(STATES['serving/established'] as IncumbentState, asked).effects).toEqual([{ type: 'spawnHolder', argv: ['/usr/bin/keeper'], cwd: '/', env: [] }]);
    const busy = incumbentTransition(STATES.draining as IncumbentState, asked);
    expect(types(busy.effects)).toEqual(['setTimer', 'send:HolderSpawned']);
    expect(busy.effects.at(-1)).toMatchObject({ message: { pid: null, error: expect.stringMatching(/handoff is in progress/) as unknown } });
    const without = { ...(STATES['serving/established'] as IncumbentState), config: { ...CONFIG, capabilities: 0 } };
    expect(incumbentTransition(without, asked).violation?.message).toMatch(/did not announce the SpawnHolder capability/);
  });

  it('reloads only between handoffs, refusing with ReloadDone during one, and only with the capability', () => {
    const asked = EVENTS['M:Reload'] as IncumbentEvent;
    expect(incumbentTransition(STATES['serving/established'] as IncumbentState, asked).effects).toEqual([{ type: 'reload', request: MESSAGES.Reload }]);
    for (const phase of ['draining', 'sealed', 'resuming']) {
      const busy = incumbentTransition(STATES[phase] as IncumbentState, asked);
      expect(busy.effects.at(-1)).toMatchObject({ type: 'send', message: { type: 'ReloadDone', requestId: 1, outcome: 'refused', error: expect.stringMatching(/handoff is in progress/) as unknown } });
    }
    const without = { ...(STATES['serving/established'] as IncumbentState), agreed: 0 };
    expect(incumbentTransition(without, asked).violation?.message).toMatch(/Reload on a session where the Reload capability is not in force/);
    // In force is what both announced: the daemon's own set bounds the HelloAck's.
    const unannounced = reach({ ...STATES['serving/hello'] as IncumbentState, config: { ...CONFIG, capabilities: 0 } }, incumbentTransition, EVENTS, ['M:HelloAck']);
    expect(unannounced.agreed).toBe(0);
  });

  it('releases the lock after seal and only then sends SealComplete with the report', () => {
    const a = incumbentTransition(STATES.sealing as IncumbentState, EVENTS.sealDone as IncumbentEvent);
    expect(types(a.effects)).toEqual(['releaseLock']);
    expect(a.state.lockHeld).toBe(true);
    const b = incumbentTransition(a.state, EVENTS.lockReleased as IncumbentEvent);
    expect(b.effects).toEqual([{ type: 'send', message: { type: 'SealComplete', handoffId: 'h1', revisions: [5], fingerprint: 'f', state: null } }]);
    expect(b.state.lockHeld).toBe(false);
    // The state the seal returned travels in SealComplete.
    const state = Uint8Array.of(0xc0);
    const withState = incumbentTransition(incumbentTransition(STATES.sealing as IncumbentState, { ...(EVENTS.sealDone as IncumbentEvent & { type: 'sealDone' }), state }).state, EVENTS.lockReleased as IncumbentEvent);
    expect(withState.effects).toEqual([{ type: 'send', message: expect.objectContaining({ type: 'SealComplete', state }) as unknown }]);
  });

  it('sends DrainProgress only while draining and only where the supervisor agreed to it; passes cutWork to the drain', () => {
    const progress = EVENTS.drainProgress as IncumbentEvent;
    expect(incumbentTransition(STATES.draining as IncumbentState, progress).effects).toEqual([]);
    const agreed = { ...(STATES.draining as IncumbentState), agreed: Capability.DrainProgress };
    expect(incumbentTransition(agreed, progress).effects).toEqual([{ type: 'send', message: { type: 'DrainProgress', handoffId: 'h1', pending: 1, kinds: ['job'], counts: [1], oldest: 'job 1: export', oldestMs: 900, leftMs: 20_000 } }]);
    expect(incumbentTransition({ ...(STATES.drained as IncumbentState), agreed: Capability.DrainProgress }, progress).effects).toEqual([]);
    const prepare = incumbentTransition(STATES['serving/established'] as IncumbentState, { type: 'message', message: { ...(MESSAGES.PrepareHandoff as PrepareHandoff), cutWork: true } });
    expect(prepare.effects).toContainEqual(expect.objectContaining({ type: 'startDrain', cutWork: true }));
  });

  it('re-takes the lock on resume only when it released it', () => {
    const resumeOf = (r: { effects: readonly IncumbentEffect[] }) => r.effects.find((e) => e.type === 'resume');
    expect(resumeOf(incumbentTransition(STATES.draining as IncumbentState, EVENTS.sessionClosed as IncumbentEvent))).toMatchObject({ reacquireLock: false });
    expect(resumeOf(incumbentTransition(STATES.sealing as IncumbentState, EVENTS['M:Abort'] as IncumbentEvent))).toMatchObject({ reacquireLock: false });
    expect(resumeOf(incumbentTransition(STATES.releasing as IncumbentState, EVENTS.sessionClosed as IncumbentEvent))).toMatchObject({ reacquireLock: true });
    expect(resumeOf(incumbentTransition(STATES.sealed as IncumbentState, EVENTS['T:supervisorLiveness'] as IncumbentEvent))).toMatchObject({ reacquireLock: true });
  });

  it('resumes when the supervisor is silent past the liveness timeout, and closes the session', () => {
    const r = incumbentTransition(STATES.drained as IncumbentState, EVENTS['T:supervisorLiveness'] as IncumbentEvent);
    expect(types(r.effects)).toEqual(['closeSession', 'cancelTimer', 'cancelTimer', 'resume']);
    expect(r.state.session).toBe('none');
  });

  it('keeps its lock and tells the supervisor when the seal fails', () => {
    const r = incumbentTransition(STATES.sealing as IncumbentState, EVENTS.sealFailed as IncumbentEvent);
    expect(r.effects[0]).toEqual({ type: 'send', message: { type: 'SealFailed', handoffId: 'h1', error: 'EIO' } });
    expect(r.effects.find((e) => e.type === 'resume')).toMatchObject({ reacquireLock: false });
  });

  it('exits 0 when the successor took the lock, 1 when resume failed otherwise', () => {
    const taken = incumbentTransition(STATES.resuming as IncumbentState, EVENTS.resumeFailed as IncumbentEvent);
    expect(taken.effects.find((e) => e.type === 'exit')).toMatchObject({ code: 0 });
    const broken = incumbentTransition(STATES.resuming as IncumbentState, { type: 'resumeFailed', error: 'EACCES', lockTaken: false });
    expect(broken.effects.find((e) => e.type === 'exit')).toMatchObject({ code: 1 });
  });

  it('heartbeats during a handoff and not while serving', () => {
    expect(incumbentTransition(STATES.sealing as IncumbentState, { type: 'timeout', timer: 'heartbeat', now: 9.9 }).effects).toEqual([
      { type: 'send', message: { type: 'Heartbeat', ts: 9 } },
      { type: 'setTimer', timer: 'heartbeat', ms: 500 },
    ]);
    expect(incumbentTransition(STATES['serving/established'] as IncumbentState, EVENTS['T:heartbeat'] as IncumbentEvent).effects).toEqual([]);
  });

  it('refuses a HelloAck outside its version range, and Abort for another handoff', () => {
    const r = incumbentTransition(STATES['serving/hello'] as IncumbentState, { type: 'message', message: { ...MESSAGES.HelloAck, version: 2 } as ToDaemonMessage });
    expect(r.violation?.message).toMatch(/version 2, outside 1\.\.1/);
    const other = incumbentTransition(STATES.draining as IncumbentState, { type: 'message', message: { ...MESSAGES.Abort, handoffId: 'h2' } as ToDaemonMessage });
    expect(other.violation).toBeDefined();
    expect(other.state.phase).toBe('resuming');
  });

  it('greets a new supervisor that replaces the one driving a handoff, after starting to resume', () => {
    const r = incumbentTransition(STATES.sealed as IncumbentState, EVENTS.sessionOpened as IncumbentEvent);
    expect(types(r.effects)).toEqual(['cancelTimer', 'cancelTimer', 'resume', 'send:Hello']);
  });
});
