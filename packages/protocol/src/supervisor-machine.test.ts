import { describe, expect, it } from 'vitest';
import { DEFAULT_TIMEOUTS } from './machine.js';
import type { ToSupervisorMessage } from './messages.js';
import { capabilities } from './negotiation.js';
import { initialSupervisorState, supervisorTransition } from './supervisor-machine.js';
import { describeTable, reach } from './transition-table.fixture.js';
import type { HandoffSpec, SupervisorEffect, SupervisorEvent, SupervisorPhase, SupervisorState } from './supervisor-machine.js';

const CAPS = capabilities('SealProgress', 'RecoverFromDisk', 'MoveConnections');
/** The incumbent's session has MoveConnections in force, and the successor's Hello announces it: connections move. */
const SPEC: HandoffSpec = { handoffId: 'h1', timeouts: DEFAULT_TIMEOUTS, capabilities: CAPS, moveConnections: true };
/** A supervisor without a data directory offers Overlap (the successor's Hello below always announces it). */
const OVERLAP_SPEC: HandoffSpec = { ...SPEC, capabilities: CAPS | capabilities('Overlap') };
const PID = 300;
const MESSAGES: Record<ToSupervisorMessage['type'], ToSupervisorMessage> = {
  Hello: { type: 'Hello', role: 'successor', pid: PID, buildId: 'v2', protoMin: 1, protoMax: 1, capabilities: CAPS | capabilities('Overlap') },
  Drained: { type: 'Drained', handoffId: 'h1', openConnsRemaining: 0, acceptClosed: true, workCut: 0, connsOffered: 0 },
  DrainProgress: { type: 'DrainProgress', handoffId: 'h1', pending: 2, kinds: ['job'], counts: [2], oldest: 'job: export', oldestMs: 1200, leftMs: 28000 },
  ConnOffer: { type: 'ConnOffer', handoffId: 'h1', connId: 1, listener: 'http', kind: 'http', leftover: new Uint8Array(0), state: null },
  SealProgress: { type: 'SealProgress', handoffId: 'h1', completed: 1, total: 2 },
  SealComplete: { type: 'SealComplete', handoffId: 'h1', revisions: [5], fingerprint: 'f', state: null },
  SealFailed: { type: 'SealFailed', handoffId: 'h1', error: 'disk full' },
  Ready: { type: 'Ready', handoffId: 'h1', listeningOn: ['http'], healthy: true, revisions: [5] },
  Heartbeat: { type: 'Heartbeat', ts: 1 },
  HolderSpawned: { type: 'HolderSpawned', pid: 400, error: '' },
  ReloadProgress: { type: 'ReloadProgress', requestId: 1, phase: 'swapped', detail: 'x' },
  ReloadDone: { type: 'ReloadDone', requestId: 1, outcome: 'reloaded', version: '2', error: '', durationMs: 5, cutCalls: 0 },
};
const TYPES = Object.keys(MESSAGES) as ToSupervisorMessage['type'][];

const EVENTS: Record<string, SupervisorEvent> = {
  start: { type: 'start', spec: SPEC },
  spawned: { type: 'spawned', pid: PID },
  spawnFailed: { type: 'spawnFailed', error: 'ENOENT' },
  ...Object.fromEntries(TYPES.map((t) => [`S:${t}`, { type: 'successorMessage', message: MESSAGES[t] }])),
  ...Object.fromEntries(TYPES.map((t) => [`I:${t}`, { type: 'incumbentMessage', message: MESSAGES[t] }])),
  successorGone: { type: 'successorGone', reason: 'exit 1' },
  incumbentExited: { type: 'incumbentExited', reason: 'SIGKILL' },
  incumbentDisconnected: { type: 'incumbentDisconnected', reason: 'EOF' },
  'T:phase': { type: 'timeout', timer: 'phase', now: 1 },
  'T:total': { type: 'timeout', timer: 'total', now: 1 },
  'T:incumbentLiveness': { type: 'timeout', timer: 'incumbentLiveness', now: 1 },
  'T:successorLiveness': { type: 'timeout', timer: 'successorLiveness', now: 1 },
  'T:heartbeat': { type: 'timeout', timer: 'heartbeat', now: 1 },
  cancel: { type: 'cancel', reason: 'operator' },
};

const drive = (...keys: string[]): SupervisorState => reach(initialSupervisorState(), supervisorTransition, EVENTS, keys);
const driveOverlap = (...keys: string[]): SupervisorState => reach(initialSupervisorState(), supervisorTransition, { ...EVENTS, start: { type: 'start', spec: OVERLAP_SPEC } }, keys);

const STATES: Record<string, SupervisorState> = {
  idle: drive(),
  spawning: drive('start'),
  awaitingHello: drive('start', 'spawned'),
  preparing: drive('start', 'spawned', 'S:Hello'),
  sealing: drive('start', 'spawned', 'S:Hello', 'I:Drained'),
  beginning: drive('start', 'spawned', 'S:Hello', 'I:Drained', 'I:SealComplete'),
  aborting: drive('start', 'spawned', 'S:Hello', 'cancel'),
  committed: drive('start', 'spawned', 'S:Hello', 'I:Drained', 'I:SealComplete', 'S:Ready'),
  rolledBack: drive('start', 'spawned', 'successorGone'),
  failed: drive('start', 'spawned', 'S:Hello', 'cancel', 'incumbentExited', 'successorGone'),
  'awaitingHello/overlap': driveOverlap('start', 'spawned'),
  'beginning/overlap': driveOverlap('start', 'spawned', 'S:Hello'),
};

describeTable({
  machine: 'supervisor',
  phases: ['idle', 'spawning', 'awaitingHello', 'preparing', 'sealing', 'beginning', 'aborting', 'committed', 'rolledBack', 'failed'] satisfies SupervisorPhase[],
  states: STATES,
  events: EVENTS,
  transition: supervisorTransition,
  onViolation: (r, before) => {
    // A violation mid-handoff aborts: the successor is stopped, or the outcome is final.
    if (r.state.phase !== before.phase) expect(r.effects.some((e) => e.type === 'stopSuccessor' || e.type === 'finished')).toBe(true);
  },
  onIgnored: (r, column) => {
    if (column !== 'T:heartbeat' && !column.endsWith('Heartbeat') && column !== 'I:ConnOffer') {
      expect(r.effects.filter((e) => e.type.startsWith('send') || e.type === 'stopSuccessor' || e.type === 'finished')).toEqual([]);
    }
  },
});

describe('supervisor machine: decisions', () => {
  const run = (state: SupervisorState, ...events: SupervisorEvent[]) => {
    let s = state;
    const effects: SupervisorEffect[] = [];
    for (const e of events) {
      const r = supervisorTransition(s, e);
      s = r.state;
      effects.push(...r.effects);
    }
    return { state: s, effects };
  };
  const sent = (effects: readonly SupervisorEffect[], to: 'sendToSuccessor' | 'sendToIncumbent') =>
    effects.flatMap((e) => (e.type === to ? [e.message.type] : []));

  it('journals before every irreversible send, in order', () => {
    const { effects } = run(STATES.idle as SupervisorState, EVENTS.start as SupervisorEvent, EVENTS.spawned as SupervisorEvent, EVENTS['S:Hello'] as SupervisorEvent, EVENTS['I:Drained'] as SupervisorEvent, EVENTS['I:SealComplete'] as SupervisorEvent, EVENTS['S:Ready'] as SupervisorEvent);
    const order = effects.filter((e) => e.type === 'journal' || e.type === 'spawnSuccessor' || (e.type.startsWith('send') && 'message' in e && e.message.type !== 'HelloAck'))
      .map((e) => (e.type === 'journal' ? `journal:${e.phase}` : e.type === 'spawnSuccessor' ? 'spawn' : `${e.type === 'sendToIncumbent' ? 'O' : 'N'}:${'message' in e ? e.message.type : ''}`));
    expect(order).toEqual([
      'journal:spawning', 'spawn',
      'journal:preparing', 'O:PrepareHandoff',
      'journal:sealing', 'O:SealRequest',
      'journal:beginning', 'N:Begin',
      'journal:committed', 'O:Commit', 'N:Commit',
      'journal:idle',
    ]);
  });

  it('forwards the seal report in Begin, and the handover state byte for byte', () => {
    const { effects } = run(STATES.sealing as SupervisorState, EVENTS['I:SealComplete'] as SupervisorEvent);
    expect(effects).toContainEqual({ type: 'sendToSuccessor', message: { type: 'Begin', handoffId: 'h1', seal: { revisions: [5], fingerprint: 'f' }, state: null, conns: 0 } });
    const state = Uint8Array.of(0x81, 0xa1, 0x6e, 0x07);
    const withState = run(STATES.sealing as SupervisorState, { type: 'incumbentMessage', message: { ...MESSAGES.SealComplete, state } as ToSupervisorMessage });
    expect(withState.effects).toContainEqual({ type: 'sendToSuccessor', message: { type: 'Begin', handoffId: 'h1', seal: { revisions: [5], fingerprint: 'f' }, state, conns: 0 } });
  });

  it('asks for cutWork when the handoff does, and reports DrainProgress only in preparing', () => {
    const started = run(STATES.idle as SupervisorState, { type: 'start', spec: { ...SPEC, cutWork: true } }, EVENTS.spawned as SupervisorEvent, EVENTS['S:Hello'] as SupervisorEvent);
    expect(started.effects).toContainEqual(expect.objectContaining({ type: 'sendToIncumbent', message: expect.objectContaining({ type: 'PrepareHandoff', cutWork: true }) as unknown }));
    const progress = run(STATES.preparing as SupervisorState, EVENTS['I:DrainProgress'] as SupervisorEvent);
    expect(progress.state.phase).toBe('preparing');
    expect(progress.effects).toContainEqual({ type: 'drainProgress', progress: { pending: 2, kinds: ['job'], counts: [2], oldest: 'job: export', oldestMs: 1200, leftMs: 28000 } });
    expect(progress.effects).toContainEqual(expect.objectContaining({ type: 'setTimer', timer: 'incumbentLiveness' }));
    // What Drained reports is kept for the handoff's result.
    const drained = run(STATES.preparing as SupervisorState, { type: 'incumbentMessage', message: { ...MESSAGES.Drained, openConnsRemaining: 1, workCut: 2 } as ToSupervisorMessage });
    expect(drained.state).toMatchObject({ phase: 'sealing', drained: { openConnsRemaining: 1, workCut: 2 } });
  });

  it('rejects a Ready whose revisions do not continue the sealed ones, and resumes the incumbent after the successor is gone', () => {
    const stale: SupervisorEvent = { type: 'successorMessage', message: { ...MESSAGES.Ready, revisions: [4] } as ToSupervisorMessage };
    const a = run(STATES.beginning as SupervisorState, stale);
    expect(a.state.phase).toBe('aborting');
    expect(a.state.abort?.code).toBe('HANDOFF_REVISIONS_DIVERGED');
    expect(sent(a.effects, 'sendToIncumbent')).toEqual([]); // not while the successor may hold the lock
    expect(a.effects).toContainEqual({ type: 'stopSuccessor', graceMs: DEFAULT_TIMEOUTS.stopGraceMs });
    const b = run(a.state, EVENTS.successorGone as SupervisorEvent);
    expect(b.state.phase).toBe('rolledBack');
    expect(sent(b.effects, 'sendToIncumbent')).toEqual(['ResumeAfterAbort']);
    expect(b.state.outcome).toMatchObject({ kind: 'rolledBack', committed: false, code: 'HANDOFF_REVISIONS_DIVERGED' });
  });

  it('aborts an unhealthy Ready', () => {
    const r = run(STATES.beginning as SupervisorState, { type: 'successorMessage', message: { ...MESSAGES.Ready, healthy: false } as ToSupervisorMessage });
    expect(r.state.abort?.code).toBe('HANDOFF_SUCCESSOR_UNHEALTHY');
  });

  it('resumes the incumbent at once when the successor never got Begin', () => {
    const r = run(STATES.sealing as SupervisorState, EVENTS['I:SealFailed'] as SupervisorEvent);
    expect(r.state.phase).toBe('aborting');
    expect(sent(r.effects, 'sendToIncumbent')).toEqual(['ResumeAfterAbort']);
    expect(sent(r.effects, 'sendToSuccessor')).toEqual(['Abort']);
    expect(run(r.state, EVENTS.successorGone as SupervisorEvent).state.outcome?.code).toBe('HANDOFF_SEAL_FAILED');
  });

  it('verifies the successor pid and refuses a disjoint version range before touching the incumbent', () => {
    const wrongPid = run(STATES.awaitingHello as SupervisorState, { type: 'successorMessage', message: { ...MESSAGES.Hello, pid: 301 } as ToSupervisorMessage });
    expect(wrongPid.state.abort?.code).toBe('HANDOFF_PID_MISMATCH');
    expect(sent(wrongPid.effects, 'sendToIncumbent')).toEqual([]);
    const future = run(STATES.awaitingHello as SupervisorState, { type: 'successorMessage', message: { ...MESSAGES.Hello, protoMin: 2, protoMax: 3 } as ToSupervisorMessage });
    expect(future.state.abort?.code).toBe('HANDOFF_VERSION_MISMATCH');
    expect(future.state.abort?.reason).toMatch(/do not overlap/);
    expect(sent(future.effects, 'sendToIncumbent')).toEqual([]);
    expect(sent(future.effects, 'sendToSuccessor')).toEqual(['Abort']);
    expect(run(future.state, EVENTS.successorGone as SupervisorEvent).state.phase).toBe('rolledBack');
  });

  it('promotes the successor with an empty seal when the incumbent dies mid-drain, and commits as promoted', () => {
    const r = run(STATES.preparing as SupervisorState, EVENTS.incumbentExited as SupervisorEvent);
    expect(r.effects).toContainEqual({ type: 'sendToSuccessor', message: { type: 'Begin', handoffId: 'h1', seal: null, state: null, conns: 0 } });
    const done = run(r.state, { type: 'successorMessage', message: { ...MESSAGES.Ready, revisions: [0, 1] } as ToSupervisorMessage });
    expect(done.state.outcome).toMatchObject({ kind: 'promoted', committed: true });
    expect(sent(done.effects, 'sendToIncumbent')).toEqual([]);
  });

  it('cold-starts when the incumbent died and the successor cannot recover', () => {
    const noRecover = run(STATES.awaitingHello as SupervisorState, EVENTS.incumbentExited as SupervisorEvent, {
      type: 'successorMessage',
      message: { ...MESSAGES.Hello, capabilities: 0 } as ToSupervisorMessage,
    });
    expect(noRecover.state.abort?.code).toBe('HANDOFF_NO_RECOVERY');
    const done = run(noRecover.state, EVENTS.successorGone as SupervisorEvent);
    expect(done.state.phase).toBe('failed');
    expect(done.effects.some((e) => e.type === 'coldStart')).toBe(true);
  });

  it('commits normally when the incumbent dies after SealComplete (Commit to the dead one is not sent)', () => {
    const r = run(STATES.beginning as SupervisorState, EVENTS.incumbentExited as SupervisorEvent, EVENTS['S:Ready'] as SupervisorEvent);
    expect(r.state.outcome).toMatchObject({ kind: 'committed' });
    expect(sent(r.effects, 'sendToIncumbent')).toEqual([]);
    expect(sent(r.effects, 'sendToSuccessor')).toEqual(['Commit']);
  });

  it('rejects a message for another handoff', () => {
    const r = supervisorTransition(STATES.preparing as SupervisorState, { type: 'incumbentMessage', message: { ...MESSAGES.Drained, handoffId: 'other' } as ToSupervisorMessage });
    expect(r.violation?.message).toMatch(/for handoff other, expected h1/);
    expect(r.state.phase).toBe('aborting');
  });

  it('heartbeats both greeted peers, and re-arms', () => {
    const r = supervisorTransition(STATES.sealing as SupervisorState, { type: 'timeout', timer: 'heartbeat', now: 1234.7 });
    expect(r.effects).toEqual([
      { type: 'sendToSuccessor', message: { type: 'Heartbeat', ts: 1234 } },
      { type: 'sendToIncumbent', message: { type: 'Heartbeat', ts: 1234 } },
      { type: 'setTimer', timer: 'heartbeat', ms: DEFAULT_TIMEOUTS.heartbeatMs },
    ]);
  });
});
