import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HandoffProtocolError } from './errors.js';
import { FieldLimits, MESSAGE_SCHEMAS, MESSAGE_TYPES, parseMessage, toWire, utf8Length } from './messages.js';
import type { Direction, Message } from './messages.js';

/** One valid instance of every message: the golden vectors. */
const binFromHex = (_key: string, value: unknown): unknown =>
  typeof value === 'object' && value !== null && typeof (value as { $bin?: unknown }).$bin === 'string' ? Uint8Array.from(Buffer.from((value as { $bin: string }).$bin, 'hex')) : value;
const SAMPLES = (JSON.parse(readFileSync(new URL('../vectors/v1.json', import.meta.url), 'utf8'), binFromHex) as { vectors: { message: Message }[] }).vectors;
const hello: Message = { type: 'Hello', role: 'successor', pid: 42, buildId: 'b', protoMin: 1, protoMax: 1, capabilities: 3 };

function asMap(message: Message, direction: Direction = MESSAGE_SCHEMAS[message.type].directions[0] as Direction): Map<string, unknown> {
  return new Map(Object.entries(toWire(message, direction)));
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error instanceof HandoffProtocolError).toBe(true);
    return (error as HandoffProtocolError).code;
  }
  return 'no error';
}

describe('parseMessage', () => {
  it('knows every message of PROTOCOL.md section 6, each with one or two directions', () => {
    expect([...MESSAGE_TYPES].sort()).toEqual(
      ['Abort', 'Begin', 'Commit', 'ConnOffer', 'Drained', 'DrainProgress', 'Heartbeat', 'Hello', 'HelloAck', 'PrepareHandoff', 'Ready', 'ResumeAfterAbort', 'SealComplete', 'SealFailed', 'SealProgress', 'SealRequest', 'SpawnHolder', 'HolderSpawned', 'Reload', 'ReloadProgress', 'ReloadDone'].sort(),
    );
  });

  it('rejects what is not a map with a string type', () => {
    for (const payload of [null, 1, 'Hello', [1], new Uint8Array(2), { type: 'Hello' }]) {
      expect(codeOf(() => parseMessage(payload, 'toSupervisor'))).toBe('HANDOFF_MALFORMED_PAYLOAD');
    }
    expect(codeOf(() => parseMessage(new Map([['type', 7]]), 'toSupervisor'))).toBe('HANDOFF_MALFORMED_PAYLOAD');
  });

  it('rejects unknown types, including Object.prototype names', () => {
    for (const tag of ['Goodbye', '__proto__', 'constructor', 'toString', '']) {
      expect(codeOf(() => parseMessage(new Map([['type', tag]]), 'toSupervisor'))).toBe('HANDOFF_UNKNOWN_MESSAGE');
    }
  });

  it('rejects a message sent in the wrong direction', () => {
    expect(codeOf(() => parseMessage(asMap(hello), 'toDaemon'))).toBe('HANDOFF_WRONG_DIRECTION');
    expect(codeOf(() => parseMessage(asMap({ type: 'Commit', handoffId: 'h' }), 'toSupervisor'))).toBe('HANDOFF_WRONG_DIRECTION');
    expect(parseMessage(asMap({ type: 'Heartbeat', ts: 1 }, 'toDaemon'), 'toSupervisor')).toEqual({ type: 'Heartbeat', ts: 1 });
  });

  it('requires every field of every message and names the missing one', () => {
    for (const { message } of SAMPLES) {
      for (const [field, spec] of Object.entries(MESSAGE_SCHEMAS[message.type].fields)) {
        const map = asMap(message);
        map.delete(field);
        if (spec.kind === 'optional') {
          // An optional field may be absent: it then takes its default.
          expect(parseMessage(map, MESSAGE_SCHEMAS[message.type].directions[0] as Direction)).toEqual({ ...message, [field]: spec.default });
          continue;
        }
        expect(() => parseMessage(map, MESSAGE_SCHEMAS[message.type].directions[0] as Direction)).toThrow(
          expect.objectContaining({ code: 'HANDOFF_INVALID_FIELD', details: expect.objectContaining({ field }) }),
        );
      }
    }
    const map = asMap(hello);
    map.delete('buildId');
    expect(() => parseMessage(map, 'toSupervisor')).toThrow(/Hello\.buildId: expected a value/);
  });

  it('checks types and ranges of each field kind', () => {
    const bad: [Message, string, unknown][] = [
      [hello, 'pid', 0],
      [hello, 'pid', FieldLimits.pidMax + 1],
      [hello, 'pid', 1.5],
      [hello, 'pid', '42'],
      [hello, 'pid', -1],
      [hello, 'role', 'supervisor'],
      [hello, 'protoMin', 0],
      [hello, 'protoMax', 0x10000],
      [hello, 'capabilities', 2 ** 32],
      [hello, 'buildId', 'x'.repeat(FieldLimits.buildIdMax + 1)],
      [hello, 'buildId', 'a\uD800'],
      [{ type: 'Drained', handoffId: 'h', openConnsRemaining: 0, acceptClosed: true, workCut: 0, connsOffered: 0 }, 'acceptClosed', 1],
      [{ type: 'Drained', handoffId: 'h', openConnsRemaining: 0, acceptClosed: true, workCut: 0, connsOffered: 0 }, 'handoffId', ''],
      [{ type: 'Drained', handoffId: 'h', openConnsRemaining: 0, acceptClosed: true, workCut: 0, connsOffered: 0 }, 'handoffId', 'has space'],
      [{ type: 'Drained', handoffId: 'h', openConnsRemaining: 0, acceptClosed: true, workCut: 0, connsOffered: 0 }, 'handoffId', 'x'.repeat(65)],
      [{ type: 'SealComplete', handoffId: 'h', revisions: [1], fingerprint: '', state: null }, 'revisions', [1, -1]],
      [{ type: 'SealComplete', handoffId: 'h', revisions: [1], fingerprint: '', state: null }, 'revisions', new Array(FieldLimits.revisionsMax + 1).fill(0)],
      [{ type: 'SealComplete', handoffId: 'h', revisions: [1], fingerprint: '', state: null }, 'revisions', 'nope'],
      [{ type: 'Ready', handoffId: 'h', listeningOn: [], healthy: true, revisions: [] }, 'listeningOn', [1]],
      [{ type: 'Ready', handoffId: 'h', listeningOn: [], healthy: true, revisions: [] }, 'listeningOn', new Array(65).fill('a')],
      [{ type: 'Begin', handoffId: 'h', seal: null, state: null, conns: 0 }, 'seal', new Map([['revisions', [1]]])],
      [{ type: 'Begin', handoffId: 'h', seal: null, state: null, conns: 0 }, 'seal', [1]],
      [{ type: 'Abort', handoffId: null, code: 'X', reason: '' }, 'code', 'lower'],
      [{ type: 'HelloAck', version: 1, handoffId: null, capabilities: 0 }, 'handoffId', 5],
    ];
    for (const [message, field, value] of bad) {
      const map = asMap(message);
      map.set(field, value);
      expect(codeOf(() => parseMessage(map, MESSAGE_SCHEMAS[message.type].directions[0] as Direction)), `${message.type}.${field}=${String(value)}`).toBe('HANDOFF_INVALID_FIELD');
    }
  });

  it('enforces the cross-field rules', () => {
    const cases: [Message, string][] = [
      [{ ...hello, protoMin: 2, protoMax: 1 }, 'protoMin must not exceed protoMax'],
      [{ type: 'PrepareHandoff', handoffId: 'h', successorPid: 2, deadlineMs: 10, drainGraceMs: 11, cutWork: false, moveConns: false }, 'drainGraceMs must not exceed deadlineMs'],
      [{ type: 'SealProgress', handoffId: 'h', completed: 3, total: 2 }, 'completed must not exceed total'],
    ];
    for (const [message, text] of cases) {
      const map = new Map<string, unknown>(Object.entries(message));
      expect(() => parseMessage(map, MESSAGE_SCHEMAS[message.type].directions[0] as Direction)).toThrow(text);
    }
  });

  it('measures string limits in UTF-8 bytes, at the exact boundary', () => {
    expect(utf8Length('aé€😀')).toBe(1 + 2 + 3 + 4);
    const exact = '€'.repeat(FieldLimits.buildIdMax / 4) + 'a'.repeat(FieldLimits.buildIdMax - (FieldLimits.buildIdMax / 4) * 3);
    expect(utf8Length(exact)).toBe(FieldLimits.buildIdMax);
    const map = asMap(hello);
    map.set('buildId', exact);
    expect(parseMessage(map, 'toSupervisor')).toMatchObject({ buildId: exact });
    map.set('buildId', `${exact}a`);
    expect(codeOf(() => parseMessage(map, 'toSupervisor'))).toBe('HANDOFF_INVALID_FIELD');
  });

  it('ignores unknown keys and returns only schema fields', () => {
    const map = asMap(hello);
    map.set('future', { nested: true });
    map.set(7 as unknown as string, 'numeric key');
    expect(parseMessage(map, 'toSupervisor')).toEqual(hello);
  });
});

describe('toWire', () => {
  it('refuses to send invalid messages with INVALID_ARGUMENT', () => {
    expect(codeOf(() => toWire({ ...hello, pid: -1 }, 'toSupervisor'))).toBe('HANDOFF_INVALID_ARGUMENT');
    expect(codeOf(() => toWire({ type: 'Nope' } as unknown as Message, 'toSupervisor'))).toBe('HANDOFF_INVALID_ARGUMENT');
    expect(codeOf(() => toWire(hello, 'toDaemon'))).toBe('HANDOFF_INVALID_ARGUMENT');
    expect(codeOf(() => toWire(Object.create({ type: 'Heartbeat', ts: 1 }) as Message, 'toDaemon'))).toBe('HANDOFF_INVALID_ARGUMENT');
  });

  it('writes type first, then fields in schema order, dropping extras', () => {
    const wire = toWire({ ...hello, extra: 1 } as Message, 'toSupervisor');
    expect(Object.keys(wire)).toEqual(['type', 'role', 'pid', 'buildId', 'protoMin', 'protoMax', 'capabilities']);
  });
});
