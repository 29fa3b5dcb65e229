/**
 * Golden vectors: the checked-in bytes decode to the checked-in messages and this encoder
 * produces exactly those bytes. A minimal msgpack reader written here (independent of
 * msgpackr) proves the bytes use only standard msgpack formats, readable in any language.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { FrameDecoder, MESSAGE_SCHEMAS, MESSAGE_TYPES, encodeFrame } from '../src/index.js';
import type { Direction, Message } from '../src/index.js';

interface Vector {
  name: string;
  direction: Direction;
  message: Message;
  hex: string;
}
/** The file writes bytes (msgpack bin) as {"$bin": "<hex>"}. */
const binFromHex = (_key: string, value: unknown): unknown =>
  typeof value === 'object' && value !== null && typeof (value as { $bin?: unknown }).$bin === 'string' ? Uint8Array.from(Buffer.from((value as { $bin: string }).$bin, 'hex')) : value;
const file = JSON.parse(readFileSync(new URL('../vectors/v1.json', import.meta.url), 'utf8'), binFromHex) as {
  protocol: number;
  byteOrder: string;
  vectors: Vector[];
  accept: { name: string; direction: Direction; message: Message; hex: string }[];
  reject: { name: string; direction: Direction; hex: string; code: string; fatal: boolean; eof?: boolean }[];
};

/** Standard msgpack only: nil, bool, ints, float 64, str, bin, array, map. Anything else throws. */
function readMsgpack(bytes: Uint8Array): unknown {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const bin = (n: number): Uint8Array => {
    const b = bytes.slice(at, at + n);
    at += n;
    return b;
  };
  const str = (n: number): string => {
    const s = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(at, at + n));
    at += n;
    return s;
  };
  const read = (): unknown => {
    const b = bytes[at++] as number;
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if (b >= 0xa0 && b <= 0xbf) return str(b & 0x1f);
    if (b >= 0x90 && b <= 0x9f) return Array.from({ length: b & 0x0f }, read);
    if (b >= 0x80 && b <= 0x8f) return map(b & 0x0f);
    const n = (len: number, f: () => number): number => {
      const v = f();
      at += len;
      return v;
    };
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xcc: return n(1, () => view.getUint8(at));
      case 0xcd: return n(2, () => view.getUint16(at));
      case 0xce: return n(4, () => view.getUint32(at));
      case 0xcf: return n(8, () => Number(view.getBigUint64(at)));
      case 0xd0: return n(1, () => view.getInt8(at));
      case 0xd1: return n(2, () => view.getInt16(at));
      case 0xd2: return n(4, () => view.getInt32(at));
      case 0xd3: return n(8, () => Number(view.getBigInt64(at)));
      case 0xcb: return n(8, () => view.getFloat64(at));
      case 0xc4: return bin(n(1, () => view.getUint8(at)));
      case 0xc5: return bin(n(2, () => view.getUint16(at)));
      case 0xc6: return bin(n(4, () => view.getUint32(at)));
      case 0xd9: return str(n(1, () => view.getUint8(at)));
      case 0xda: return str(n(2, () => view.getUint16(at)));
      case 0xdc: return Array.from({ length: n(2, () => view.getUint16(at)) }, read);
      case 0xde: return map(n(2, () => view.getUint16(at)));
      default: throw new Error(`byte 0x${b.toString(16)} at ${at - 1} is not a plain msgpack format used by v1`);
    }
  };
  const map = (count: number): Record<string, unknown> => {
    const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
    for (let i = 0; i < count; i++) {
      const key = read();
      if (typeof key !== 'string') throw new Error('map key is not a string');
      out[key] = read();
    }
    return out;
  };
  const value = read();
  if (at !== bytes.byteLength) throw new Error(`${bytes.byteLength - at} trailing bytes`);
  return value;
}

describe('golden vectors (vectors/v1.json)', () => {
  it('cover every message type', () => {
    expect(file.protocol).toBe(1);
    expect(new Set(file.vectors.map((v) => v.message.type))).toEqual(new Set(MESSAGE_TYPES));
  });

  for (const vector of file.vectors) {
    it(`${vector.name}: bytes <-> message`, () => {
      const bytes = Uint8Array.from(Buffer.from(vector.hex, 'hex'));
      // Header: u32 big-endian length of what follows, u16 big-endian version 1.
      const view = new DataView(bytes.buffer);
      expect(view.getUint32(0)).toBe(bytes.byteLength - 4);
      expect(view.getUint16(4)).toBe(1);
      // The payload is plain msgpack: a map with `type` first, then the fields.
      const payload = readMsgpack(bytes.subarray(6)) as Record<string, unknown>;
      expect(Object.keys(payload)[0]).toBe('type');
      // Every field, except an optional one holding its default: the canonical form leaves it out.
      const onWire = Object.fromEntries(
        Object.entries(vector.message).filter(([field, value]) => {
          const spec = MESSAGE_SCHEMAS[vector.message.type].fields[field];
          return spec?.kind !== 'optional' || value !== spec.default;
        }),
      );
      expect({ ...payload }).toEqual(onWire);
      // This implementation decodes the bytes to the message and encodes the message to the bytes.
      const [r] = new FrameDecoder({ direction: vector.direction }).push(bytes);
      expect(r).toMatchObject({ ok: true, version: 1, message: vector.message });
      expect(Buffer.from(encodeFrame(vector.message, vector.direction)).toString('hex')).toBe(vector.hex);
    });
  }
});

describe('decoder vectors (vectors/v1.json: accept, reject)', () => {
  for (const vector of file.accept) {
    it(`accepts ${vector.name}`, () => {
      const bytes = Uint8Array.from(Buffer.from(vector.hex, 'hex'));
      expect(new FrameDecoder({ direction: vector.direction }).push(bytes)).toMatchObject([{ ok: true, version: 1, message: vector.message }]);
      // The canonical encoding differs: these bytes are for decoders only.
      expect(Buffer.from(encodeFrame(vector.message, vector.direction)).toString('hex')).not.toBe(vector.hex);
    });
  }
  for (const vector of file.reject) {
    it(`rejects ${vector.name} with ${vector.code}`, () => {
      const bytes = Uint8Array.from(Buffer.from(vector.hex, 'hex'));
      const decoder = new FrameDecoder({ direction: vector.direction });
      const [r] = [...decoder.push(bytes), ...(vector.eof ? decoder.end() : [])];
      expect(r).toMatchObject({ ok: false, fatal: vector.fatal, error: { code: vector.code } });
    });
  }
});
