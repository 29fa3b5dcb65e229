import { Packr } from 'msgpackr';
import { describe, expect, it, vi } from 'vitest';
import { FieldLimits } from '@handoff/protocol';
import { decodeHandover, encodeHandover } from './handover.js';
import type { CutWork } from './work.js';

const item = (id: number, resume: unknown = { step: id }): CutWork => ({ id, kind: 'job', description: `job number ${id}`, startedAt: 1_700_000_000_000, interruptible: false, why: 'deadline', resume, released: true });

describe('the handover state', () => {
  it('round-trips what seal returned and the cut work; nothing to hand over is null', () => {
    const cut = [item(1), item(2, null)];
    expect(decodeHandover(encodeHandover({ offset: 4242, sessions: ['a', 'b'], ratio: 0.5 }, cut))).toEqual({ state: { offset: 4242, sessions: ['a', 'b'], ratio: 0.5 }, cut });
    expect(encodeHandover(undefined, [])).toBeNull();
    expect(decodeHandover(encodeHandover(undefined, [item(3)]))).toEqual({ state: null, cut: [item(3)] });
    expect(decodeHandover(null)).toBeNull();
  });

  it('refuses a value that does not encode or is over the bound by itself, saying so in one line', () => {
    expect(() => encodeHandover({ big: 10n ** 30n }, [])).toThrow(/^the state to hand over does not encode as msgpack \(.+\): return plain data/);
    expect(() => encodeHandover({ pad: 'x'.repeat(FieldLimits.stateMax) }, [])).toThrow(/^the state to hand over is \d+ bytes encoded, above the limit of 524288/);
  });

  it('hands over as many cut items as fit, and says how many it left out', () => {
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const cut = Array.from({ length: 6_000 }, (_, i) => item(i, { step: i, note: 'n'.repeat(64) }));
      const bytes = encodeHandover({ counters: 1 }, cut);
      expect(bytes?.length).toBeLessThanOrEqual(FieldLimits.stateMax);
      const back = decodeHandover(bytes);
      expect(back?.state).toEqual({ counters: 1 });
      expect(back?.cut.length).toBeGreaterThan(1_000);
      expect(back?.cut.length).toBeLessThan(6_000);
      expect(back?.cut[0]).toEqual(cut[0]);
      expect(String(write.mock.calls.at(-1)?.[0])).toMatch(new RegExp(`^handoff: the handover state is over 524288 bytes with every cut item: ${6_000 - (back?.cut.length ?? 0)} of 6000 cut items are not handed over`));
    } finally {
      write.mockRestore();
    }
  });

  it('starts without a state it cannot read, and keeps only well-formed cut items', () => {
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(decodeHandover(Uint8Array.of(0x92, 0x01))).toBeNull(); // an array of 2 that ends after 1
      expect(decodeHandover(new Packr({ useRecords: false }).pack({ v: 2 }))).toBeNull();
      expect(write.mock.calls.map((c) => String(c[0]))).toEqual([expect.stringMatching(/does not decode .*; starting without it/), expect.stringMatching(/in a layout this version does not read; starting without it/)]);
      const mixed = new Packr({ useRecords: false }).pack({ v: 1, app: 7, cut: [null, 'x', { kind: 'job' }, { id: 4, kind: 'job', why: 'odd' }] });
      expect(decodeHandover(mixed)).toEqual({ state: 7, cut: [{ id: 4, kind: 'job', description: '', startedAt: 0, interruptible: false, why: 'deadline', resume: null, released: false }] });
    } finally {
      write.mockRestore();
    }
  });
});
