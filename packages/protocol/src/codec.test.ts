import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { anyMessage, messageOf } from './arbitraries.fixture.js';
import { DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, FrameDecoder, encodeCanonical, encodeFrame } from './codec.js';
import type { DecodeResult } from './codec.js';
import { HandoffProtocolError, ProtocolErrorCode } from './errors.js';
import { toWire } from './messages.js';
import type { Direction, Message } from './messages.js';

const CODES = new Set<string>(Object.values(ProtocolErrorCode));
const rawPackr = new Packr({ useRecords: false, variableMapSize: true });

function frameOf(payload: Uint8Array, version = 1, length = 2 + payload.byteLength): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + payload.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, length);
  view.setUint16(4, version);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

function decodeAll<D extends Direction>(direction: D, ...chunks: Uint8Array[]): DecodeResult<D>[] {
  const decoder = new FrameDecoder({ direction });
  return [...chunks.flatMap((c) => decoder.push(c)), ...decoder.end()];
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

function expectTyped(result: DecodeResult<Direction>): void {
  if (result.ok) return;
  expect(result.error instanceof HandoffProtocolError).toBe(true);
  expect(CODES.has(result.error.code)).toBe(true);
}

describe('encodeFrame / FrameDecoder', () => {
  it('round-trips every message of every direction', () => {
    fc.assert(
      fc.property(anyMessage, ({ message, direction }) => {
        const results = decodeAll(direction, encodeFrame(message, direction));
        expect(results).toHaveLength(1);
        const [r] = results;
        expect(r?.ok).toBe(true);
        if (r?.ok) {
          expect(r.message).toEqual(message);
          expect(r.version).toBe(1);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('decodes the same frames from any split of the stream', () => {
    fc.assert(
      fc.property(fc.array(messageOf('toSupervisor'), { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 30 }), (messages, cuts) => {
        const stream = concat(messages.map((m) => encodeFrame(m, 'toSupervisor')));
        const points = [...new Set(cuts.map((c) => c % (stream.byteLength + 1)))].sort((a, b) => a - b);
        const chunks: Uint8Array[] = [];
        let last = 0;
        for (const p of [...points, stream.byteLength]) {
          chunks.push(stream.subarray(last, p));
          last = p;
        }
        const results = decodeAll('toSupervisor', ...chunks);
        expect(results.map((r) => (r.ok ? r.message : r.error.code))).toEqual(messages);
      }),
      { numRuns: 500 },
    );
  });

  it('decodes byte-at-a-time', () => {
    const m: Message = { type: 'SealComplete', handoffId: 'h1', revisions: [1, 2 ** 40, Number.MAX_SAFE_INTEGER], fingerprint: 'ff', state: null };
    const frame = encodeFrame(m, 'toSupervisor');
    const bytes = [...frame].map((b) => Uint8Array.of(b));
    expect(decodeAll('toSupervisor', ...bytes)).toEqual([{ ok: true, version: 1, message: m, frameBytes: frame.byteLength }]);
  });

  it('never yields an untyped error for random bytes, and never throws', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), fc.constantFrom<Direction>('toSupervisor', 'toDaemon'), (chunks, direction) => {
        for (const r of decodeAll(direction, ...chunks)) expectTyped(r);
      }),
      { numRuns: 3000 },
    );
  });

  it('never yields an untyped error for random payloads in well-formed frames', () => {
    const payloads = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc.anything({ withMap: true, withSet: true, withDate: true, withTypedArray: true, withBigInt: true, withNullPrototype: true }).map((v) => {
        try {
          return rawPackr.pack(v);
        } catch {
          return new Uint8Array([0xc1]);
        }
      }),
    );
    fc.assert(
      fc.property(payloads, fc.constantFrom<Direction>('toSupervisor', 'toDaemon'), (payload, direction) => {
        const results = decodeAll(direction, frameOf(payload));
        expect(results).toHaveLength(1);
        for (const r of results) expectTyped(r);
      }),
      { numRuns: 3000 },
    );
  });

  it('decodes ill-typed fields of real messages into INVALID_FIELD, not crashes', () => {
    fc.assert(
      fc.property(anyMessage, fc.nat(), fc.anything({ withMap: true, withBigInt: true }), ({ message, direction }, pick, junk) => {
        const wire = toWire(message, direction);
        const keys = Object.keys(wire).filter((k) => k !== 'type');
        if (keys.length === 0) return;
        const key = keys[pick % keys.length] as string;
        const map = new Map<string, unknown>(Object.entries(wire));
        map.set(key, junk);
        let payload: Uint8Array;
        try {
          payload = rawPackr.pack(map);
        } catch {
          return;
        }
        for (const r of decodeAll(direction, frameOf(payload))) expectTyped(r);
      }),
      { numRuns: 2000 },
    );
  });

  it('rejects an oversized frame from its header alone, before buffering its body', () => {
    fc.assert(
      fc.property(fc.integer({ min: 16, max: 4096 }), fc.integer({ min: 1, max: 2 ** 31 }), (max, excess) => {
        const decoder = new FrameDecoder({ direction: 'toSupervisor', maxFrameBytes: max });
        const header = new Uint8Array(4);
        new DataView(header.buffer).setUint32(0, Math.min(max + excess, 0xffff_ffff));
        const [r] = decoder.push(header);
        expect(r?.ok).toBe(false);
        if (r && !r.ok) {
          expect(r.error.code).toBe(ProtocolErrorCode.FrameTooLarge);
          expect(r.fatal).toBe(true);
        }
        expect(decoder.bufferedBytes).toBe(0);
        expect(decoder.state).toBe('failed');
        // The body that follows is discarded, never buffered.
        expect(decoder.push(new Uint8Array(1000))[0]).toMatchObject({ ok: false, fatal: true });
        expect(decoder.bufferedBytes).toBe(0);
      }),
    );
  });

  it('never buffers more than one maximum frame', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 40 }), (chunks) => {
        const max = 256;
        const decoder = new FrameDecoder({ direction: 'toDaemon', maxFrameBytes: max });
        for (const c of chunks) {
          for (const r of decoder.push(c)) expectTyped(r);
          if (decoder.state === 'open') expect(decoder.bufferedBytes).toBeLessThan(4 + max + 300);
        }
      }),
    );
  });

  it('accepts a frame of exactly the maximum size', () => {
    const message: Message = { type: 'SealFailed', handoffId: 'h', error: 'x'.repeat(4000) };
    const frame = encodeFrame(message, 'toSupervisor');
    const decoder = new FrameDecoder({ direction: 'toSupervisor', maxFrameBytes: frame.byteLength - 4 });
    expect(decoder.push(frame)[0]?.ok).toBe(true);
    const smaller = new FrameDecoder({ direction: 'toSupervisor', maxFrameBytes: frame.byteLength - 5 });
    expect(smaller.push(frame)[0]).toMatchObject({ ok: false, error: { code: 'HANDOFF_FRAME_TOO_LARGE' } });
  });

  it('refuses to encode above the maximum frame size', () => {
    const message: Message = { type: 'SealFailed', handoffId: 'h', error: 'x'.repeat(4000) };
    expect(() => encodeFrame(message, 'toSupervisor', { maxFrameBytes: 100 })).toThrow(expect.objectContaining({ code: 'HANDOFF_FRAME_TOO_LARGE' }));
    expect(DEFAULT_MAX_FRAME_BYTES).toBe(1024 * 1024);
  });

  it('reports a frame whose length cannot hold the version as fatal', () => {
    for (const length of [0, 1]) {
      const header = new Uint8Array(4);
      new DataView(header.buffer).setUint32(0, length);
      const [r] = decodeAll('toDaemon', header);
      expect(r).toMatchObject({ ok: false, fatal: true, error: { code: 'HANDOFF_FRAME_INVALID' } });
    }
  });

  it('reports truncation at end of stream and nothing for a clean end', () => {
    const frame = encodeFrame({ type: 'Heartbeat', ts: 5 }, 'toDaemon');
    for (let cut = 1; cut < frame.byteLength; cut++) {
      const results = decodeAll('toDaemon', frame.subarray(0, cut));
      expect(results).toEqual([expect.objectContaining({ ok: false, fatal: true, error: expect.objectContaining({ code: 'HANDOFF_FRAME_TRUNCATED' }) })]);
    }
    expect(decodeAll('toDaemon', frame)).toHaveLength(1);
  });

  it('skips a frame of an unsupported version without losing framing', () => {
    const good = encodeFrame({ type: 'Heartbeat', ts: 1 }, 'toDaemon');
    const future = encodeFrame({ type: 'Heartbeat', ts: 2 }, 'toDaemon', { version: 7 });
    const results = decodeAll('toDaemon', future, good);
    expect(results[0]).toMatchObject({ ok: false, fatal: false, error: { code: 'HANDOFF_UNSUPPORTED_VERSION', details: { version: 7 } } });
    expect(results[1]).toMatchObject({ ok: true, message: { type: 'Heartbeat', ts: 1 } });
  });

  it('keeps returning the fatal error after a fatal error', () => {
    const decoder = new FrameDecoder({ direction: 'toDaemon', maxFrameBytes: 10 });
    const first = decoder.push(Uint8Array.of(0, 0, 1, 0));
    const again = decoder.push(encodeFrame({ type: 'Heartbeat', ts: 1 }, 'toDaemon'));
    expect(again[0]).toMatchObject({ ok: false, fatal: true });
    expect(again[0]).toEqual(first[0]);
  });

  it('rejects trailing bytes after the msgpack value', () => {
    const payload = concat([rawPackr.pack({ type: 'Heartbeat', ts: 1 }), Uint8Array.of(0xc0)]);
    expect(decodeAll('toDaemon', frameOf(payload))[0]).toMatchObject({ ok: false, error: { code: 'HANDOFF_MALFORMED_PAYLOAD' } });
  });

  it('encodes canonically: the shortest form of each family at every boundary (PROTOCOL.md section 4)', () => {
    const head = (v: unknown): string => Buffer.from(encodeCanonical(v)).toString('hex').slice(0, 2);
    const ints: [number, string][] = [[0, '00'], [127, '7f'], [128, 'cc'], [255, 'cc'], [256, 'cd'], [65_535, 'cd'], [65_536, 'ce'], [2 ** 32 - 1, 'ce'], [2 ** 32, 'cf'], [2 ** 53 - 1, 'cf'], [-1, 'ff'], [-32, 'e0'], [-33, 'd0'], [-129, 'd1'], [-32_769, 'd2'], [-(2 ** 31) - 1, 'd3']];
    for (const [v, tag] of ints) expect([v, head(v)]).toEqual([v, tag]);
    for (const [n, tag] of [[31, 'bf'], [32, 'd9'], [255, 'd9'], [256, 'da'], [65_536, 'db']] as const) expect([n, head('x'.repeat(n))]).toEqual([n, tag]);
    for (const [n, tag] of [[15, '9f'], [16, 'dc']] as const) expect([n, head(Array.from({ length: n }, () => 0))]).toEqual([n, tag]);
    for (const [n, tag] of [[15, '8f'], [16, 'de']] as const) expect([n, head(Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 0])))]).toEqual([n, tag]);
    expect(Buffer.from(encodeCanonical([null, true, false, 'é'])).toString('hex')).toBe('94c0c3c2a2c3a9');
    for (const s of ['a', 'é', '€', '𝄞', 'mixed é€𝄞 text', '\ud800']) expect(Buffer.from(encodeCanonical(s)).subarray(1).toString('hex')).toBe(Buffer.from(new TextEncoder().encode(s)).toString('hex'));
    expect(() => encodeCanonical(1.5)).toThrow(/not an integer/);
    expect(() => encodeCanonical({ a: undefined })).toThrow(/undefined cannot be encoded/);
    expect(() => encodeCanonical(new Map([['a', 1]]))).toThrow(/a Map cannot be encoded/);
    for (const [n, tag] of [[0, 'c4'], [255, 'c4'], [256, 'c5'], [65_536, 'c6']] as const) expect([n, head(new Uint8Array(n))]).toEqual([n, tag]);
    expect(Buffer.from(encodeCanonical(Uint8Array.of(1, 2))).toString('hex')).toBe('c4020102');
  });

  it('writes integers above 2^32-1 as uint 64 (the canonical form), not floats', () => {
    const frame = encodeFrame({ type: 'Heartbeat', ts: 2 ** 40 }, 'toDaemon');
    expect([...frame.subarray(frame.byteLength - 9)][0]).toBe(0xcf);
    expect(decodeAll('toDaemon', frame)[0]).toMatchObject({ ok: true, message: { ts: 2 ** 40 } });
  });

  it('accepts integers in any msgpack integer width and exact floats from other encoders', () => {
    for (const ts of [Uint8Array.of(0xcf, 0, 0, 0, 0, 0, 0, 0, 9), Uint8Array.of(0xd1, 0, 9), Uint8Array.of(0xcb, 0x40, 0x22, 0, 0, 0, 0, 0, 0)]) {
      const payload = concat([Uint8Array.of(0x82, 0xa4, ...new TextEncoder().encode('type'), 0xa9, ...new TextEncoder().encode('Heartbeat'), 0xa2, 0x74, 0x73), ts]);
      expect(decodeAll('toDaemon', frameOf(payload))[0]).toMatchObject({ ok: true, message: { type: 'Heartbeat', ts: 9 } });
    }
    const huge = concat([Uint8Array.of(0x82, 0xa4, ...new TextEncoder().encode('type'), 0xa9, ...new TextEncoder().encode('Heartbeat'), 0xa2, 0x74, 0x73), Uint8Array.of(0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0)]);
    expect(decodeAll('toDaemon', frameOf(huge))[0]).toMatchObject({ ok: false, error: { code: 'HANDOFF_INVALID_FIELD' } });
  });
});

describe('prototype pollution', () => {
  const keys = fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', '__defineGetter__');
  it('ignores hostile keys at any depth and never touches Object.prototype', () => {
    fc.assert(
      fc.property(anyMessage, fc.array(keys, { minLength: 1, maxLength: 4 }), ({ message, direction }, hostile) => {
        const wire = new Map<string, unknown>(Object.entries(toWire(message, direction)));
        const evil = new Map<string, unknown>([['polluted', true], ['isAdmin', true]]);
        for (const k of hostile) wire.set(k, evil);
        if (message.type === 'Begin' && message.seal) {
          wire.set('seal', new Map<string, unknown>([...Object.entries(message.seal), ...hostile.map((k) => [k, evil] as const)]));
        }
        const [r] = decodeAll(direction, frameOf(rawPackr.pack(wire) as Uint8Array));
        expect(r?.ok).toBe(true);
        if (r?.ok) {
          expect(r.message).toEqual(message);
          expect(Object.getPrototypeOf(r.message)).toBe(Object.prototype);
          for (const k of hostile) expect(Object.prototype.hasOwnProperty.call(r.message, k)).toBe(false);
        }
        const probe = {} as Record<string, unknown>;
        expect(probe.polluted).toBeUndefined();
        expect(probe.isAdmin).toBeUndefined();
        expect(typeof probe.toString).toBe('function');
      }),
      { numRuns: 500 },
    );
  });
});
