import { describe, expect, it } from 'vitest';
import { JOURNAL_PHASES, encodeJournal, parseJournal } from './journal.js';
import type { JournalRecord } from './journal.js';

const record: JournalRecord = {
  v: 1,
  phase: 'beginning',
  handoffId: 'h-7',
  writtenAt: 1_700_000_000_000,
  supervisorPid: 10,
  incumbent: { pid: 11, startTime: '123' },
  successor: { pid: 12, startTime: null },
  seal: { revisions: [4, 5], fingerprint: 'abc' },
  versions: {
    configured: { command: '/usr/bin/node', args: ['v1.js'], env: { A: '1' }, cwd: null },
    current: { command: '/usr/bin/node', args: ['v2.js'], env: { A: '1' }, cwd: '/srv' },
    currentGood: false,
    lastGood: { command: '/usr/bin/node', args: ['v1.js'], env: { A: '1' }, cwd: null },
    next: null,
    generation: 3,
    servingSince: 1_699_999_000_000,
  },
  lastHandoff: { handoffId: 'h-6', outcome: 'committed' },
};

describe('journal', () => {
  it('round-trips every phase as one JSON line', () => {
    for (const phase of JOURNAL_PHASES) {
      const text = encodeJournal({ ...record, phase });
      expect(text.endsWith('\n')).toBe(true);
      expect(text.trim().includes('\n')).toBe(false);
      expect(parseJournal(text)).toEqual({ ...record, phase });
    }
  });

  it('keeps any program the system could run: long values and many arguments', () => {
    const big = { command: '/usr/bin/node', args: Array.from({ length: 1_000 }, (_, i) => `--a${i}`), env: { CERT: 'x'.repeat(100_000) }, cwd: null };
    const versions = { ...record.versions, current: big, configured: big } as NonNullable<JournalRecord['versions']>;
    expect(parseJournal(encodeJournal({ ...record, versions })).versions?.current).toEqual(big);
  });

  it('treats absent optional parts as null', () => {
    expect(parseJournal('{"v":1,"phase":"idle","handoffId":null,"writtenAt":1,"supervisorPid":2}')).toEqual({
      v: 1, phase: 'idle', handoffId: null, writtenAt: 1, supervisorPid: 2, incumbent: null, successor: null, seal: null, versions: null, lastHandoff: null,
    });
  });

  it('rejects damaged or foreign records with JOURNAL_INVALID naming the field', () => {
    const cases: [string, RegExp][] = [
      ['', /not JSON/],
      ['{"v":1', /not JSON/],
      ['[]', /must be a JSON object/],
      ['{"v":2}', /v must be 1/],
      [JSON.stringify({ ...record, phase: 'dancing' }), /phase must be one of/],
      [JSON.stringify({ ...record, handoffId: '' }), /handoffId/],
      [JSON.stringify({ ...record, writtenAt: -1 }), /writtenAt/],
      [JSON.stringify({ ...record, versions: { ...record.versions, current: { command: '', args: [], env: {}, cwd: null } } }), /versions\.current\.command/],
      [JSON.stringify({ ...record, versions: { ...record.versions, lastGood: { command: 'x', args: [1], env: {}, cwd: null } } }), /versions\.lastGood\.args/],
      [JSON.stringify({ ...record, versions: { ...record.versions, currentGood: 'yes' } }), /versions\.currentGood/],
      [JSON.stringify({ ...record, lastHandoff: { big: 'x'.repeat(70_000) } }), /lastHandoff/],
      [JSON.stringify({ ...record, supervisorPid: 0 }), /supervisorPid/],
      [JSON.stringify({ ...record, incumbent: { pid: 'x' } }), /incumbent\.pid/],
      [JSON.stringify({ ...record, successor: [] }), /successor must be an object/],
      [JSON.stringify({ ...record, seal: { revisions: [-1], fingerprint: '' } }), /seal\.revisions/],
      [JSON.stringify({ ...record, seal: { revisions: [], fingerprint: 5 } }), /seal\.fingerprint/],
    ];
    for (const [text, message] of cases) {
      expect(() => parseJournal(text), text).toThrow(expect.objectContaining({ code: 'HANDOFF_JOURNAL_INVALID', message: expect.stringMatching(message) }));
    }
  });

  it('never writes what it cannot read back', () => {
    expect(() => encodeJournal({ ...record, supervisorPid: -5 })).toThrow(expect.objectContaining({ code: 'HANDOFF_JOURNAL_INVALID' }));
  });

  it('ignores a __proto__ key in the file', () => {
    const parsed = parseJournal('{"v":1,"phase":"idle","handoffId":null,"writtenAt":1,"supervisorPid":2,"__proto__":{"polluted":true}}');
    expect((parsed as unknown as Record<string, unknown>).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
