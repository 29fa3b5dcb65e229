import { describe, expect, it } from 'vitest';
import type { ToDaemonMessage } from './messages.js';
import { describeTable, reach } from './transition-table.fixture.js';
import { initialSuccessorState, successorTransition } from './successor-machine.js';
import type { SuccessorEffect, SuccessorEvent, SuccessorPhase, SuccessorState } from './successor-machine.js';

const CONFIG = { pid: 300, buildId: 'v2', versions: { min: 1, max: 1 }, capabilities: 2, heartbeatMs: 500, livenessMs: 3000 };
const MESSAGES: Record<ToDaemonMessage['type'], ToDaemonMessage> = {
  HelloAck: { type: 'HelloAck', version: 1, handoffId: 'h1', capabilities: 2 | 256 },
  PrepareHandoff: { type: 'PrepareHandoff', handoffId: 'h1', successorPid: 300, deadlineMs: 1000, drainGraceMs: 100, cutWork: false, moveConns: false },
  SealRequest: { type: 'SealRequest', handoffId: 'h1' },
  Begin: { type: 'Begin', handoffId: 'h1', seal: { revisions: [5], fingerprint: 'f' }, state: null, conns: 0 },
  ConnOffer: { type: 'ConnOffer', handoffId: 'h1', connId: 1, listener: 'http', kind: 'http', leftover: new Uint8Array(0), state: null },
  Commit: { type: 'Commit', handoffId: 'h1' },
  Abort: { type: 'Abort', handoffId: 'h1', code: 'HANDOFF_CANCELLED', reason: 'x' },
  ResumeAfterAbort: { type: 'ResumeAfterAbort', handoffId: 'h1', reason: 'x' },
  Heartbeat: { type: 'Heartbeat', ts: 1 },
  SpawnHolder: { type: 'SpawnHolder', argv: ['/usr/bin/keeper'], cwd: '/', env: [] },
  Reload: { type: 'Reload', requestId: 1, target: 'config', name: '', source: '' },
};
const EVENTS: Record<string, SuccessorEvent> = {
  start: { type: 'start' },
  sessionClosed: { type: 'sessionClosed', reason: 'EOF' },
  ...Object.fromEntries(Object.entries(MESSAGES).map(([t, message]) => [`M:${t}`, { type: 'message', message }])),
  takeoverDone: { type: 'takeoverDone', listeningOn: ['http'], healthy: true, revisions: [5] },
  takeoverFailed: { type: 'takeoverFailed', error: 'lock held' },
  'T:supervisorLiveness': { type: 'timeout', timer: 'supervisorLiveness', now: 1 },
  'T:heartbeat': { type: 'timeout', timer: 'heartbeat', now: 1 },
};

const drive = (...keys: string[]): SuccessorState => reach(initialSuccessorState(CONFIG), successorTransition, EVENTS, keys);
const STATES: Record<string, SuccessorState> = {
  init: drive(),
  awaitingAck: drive('start'),
  awaitingBegin: drive('start', 'M:HelloAck'),
  takingOver: drive('start', 'M:HelloAck', 'M:Begin'),
  'takingOver/orphaned': drive('start', 'M:HelloAck', 'M:Begin', 'sessionClosed'),
  ready: drive('start', 'M:HelloAck', 'M:Begin', 'takeoverDone'),
  committed: drive('start', 'M:HelloAck', 'M:Begin', 'takeoverDone', 'M:Commit'),
  exited: drive('start', 'M:Abort'),
};

describeTable({
  machine: 'successor',
  phases: ['init', 'awaitingAck', 'awaitingBegin', 'takingOver', 'ready', 'committed', 'exited'] satisfies SuccessorPhase[],
  states: STATES,
  events: EVENTS,
  transition: successorTransition,
  onViolation: (r) => {
    expect(r.effects.some((e) => e.type === 'exit' && e.code === 1)).toBe(true);
  },
});

describe('successor machine: decisions', () => {
  const types = (effects: readonly SuccessorEffect[]) => effects.map((e) => (e.type === 'send' ? `send:${e.message.type}` : e.type));

  it('says Hello first and takes over only on Begin, with the seal report', () => {
    expect(types(successorTransition(STATES.init as SuccessorState, EVENTS.start as SuccessorEvent).effects)).toEqual(['send:Hello', 'setTimer', 'setTimer']);
    expect(successorTransition(STATES.awaitingBegin as SuccessorState, EVENTS['M:Begin'] as SuccessorEvent).effects).toContainEqual({
      type: 'takeOver', handoffId: 'h1', seal: { revisions: [5], fingerprint: 'f' }, state: null, conns: 0,
    });
  });

  it('sends Ready with what the takeover reported, and becomes the incumbent on Commit only', () => {
    const r = successorTransition(STATES.takingOver as SuccessorState, { type: 'takeoverDone', listeningOn: ['a', 'b'], healthy: false, revisions: [9] });
    expect(r.effects).toEqual([{ type: 'send', message: { type: 'Ready', handoffId: 'h1', listeningOn: ['a', 'b'], healthy: false, revisions: [9] } }]);
    expect(types(r.effects)).not.toContain('becomeIncumbent');
    expect(successorTransition(STATES.ready as SuccessorState, EVENTS['M:Commit'] as SuccessorEvent).effects).toContainEqual({ type: 'becomeIncumbent', handoffId: 'h1', promoted: false, adoptConnections: true });
  });

  it('exits when the supervisor goes before Begin; serves on when it goes after the lock is taken', () => {
    expect(types(successorTransition(STATES.awaitingBegin as SuccessorState, EVENTS.sessionClosed as SuccessorEvent).effects)).toContain('exit');
    expect(successorTransition(STATES.ready as SuccessorState, EVENTS['T:supervisorLiveness'] as SuccessorEvent).effects).toContainEqual({
      type: 'becomeIncumbent', handoffId: 'h1', promoted: true, adoptConnections: false,
    });
    expect(successorTransition(STATES['takingOver/orphaned'] as SuccessorState, EVENTS.takeoverDone as SuccessorEvent).effects).toContainEqual({
      type: 'becomeIncumbent', handoffId: 'h1', promoted: true, adoptConnections: false,
    });
    const sick = successorTransition(STATES['takingOver/orphaned'] as SuccessorState, { ...(EVENTS.takeoverDone as SuccessorEvent), healthy: false } as SuccessorEvent);
    expect(sick.effects.find((e) => e.type === 'exit')).toMatchObject({ code: 1 });
  });

  it('refuses a HelloAck without a handoff id or outside its versions', () => {
    for (const message of [{ ...MESSAGES.HelloAck, handoffId: null }, { ...MESSAGES.HelloAck, version: 3 }] as ToDaemonMessage[]) {
      expect(successorTransition(STATES.awaitingAck as SuccessorState, { type: 'message', message }).violation).toBeDefined();
    }
  });
});
