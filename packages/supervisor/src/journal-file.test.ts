import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { JournalRecord } from '@handoff/protocol';
import { JournalFile } from './journal-file.js';

let dir = '';
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});
const record: JournalRecord = { v: 1, phase: 'sealing', handoffId: 'h-1', writtenAt: 1, supervisorPid: 2, incumbent: { pid: 3, startTime: '9' }, successor: null, seal: null, versions: null, lastHandoff: null };

describe('JournalFile', () => {
  it('has no record at first, then the last one written, replacing it whole', () => {
    dir = mkdtempSync(join(tmpdir(), 'handoff-journal-'));
    const journal = new JournalFile(join(dir, 'journal.json'));
    expect(journal.read()).toEqual({ record: null, damaged: null });
    journal.write(record);
    journal.write({ ...record, phase: 'beginning', seal: { revisions: [4], fingerprint: 'f' } });
    expect(journal.read().record).toMatchObject({ phase: 'beginning', seal: { revisions: [4] } });
    expect(readdirSync(dir)).toEqual(['journal.json']); // no temp file left behind
  });

  it('moves a damaged journal aside and reports it, so recovery falls back to the lock and the control socket', () => {
    dir = mkdtempSync(join(tmpdir(), 'handoff-journal-'));
    const path = join(dir, 'journal.json');
    writeFileSync(path, '{"v":1,"phase":"seal');
    const { record: read, damaged } = new JournalFile(path).read();
    expect(read).toBeNull();
    expect(damaged).toMatch(/not JSON.*moved to .*journal\.json\.damaged-\d+/);
    expect(existsSync(path)).toBe(false);
    const aside = readdirSync(dir).find((f) => f.startsWith('journal.json.damaged-')) as string;
    expect(readFileSync(join(dir, aside), 'utf8')).toBe('{"v":1,"phase":"seal');
  });

  it('fails with a clear error when the directory is not writable', () => {
    dir = mkdtempSync(join(tmpdir(), 'handoff-journal-'));
    expect(() => { new JournalFile(join(dir, 'missing', 'journal.json')).write(record); }).toThrow(expect.objectContaining({ code: 'HANDOFF_JOURNAL', message: expect.stringMatching(/cannot write the journal.*permissions/) }));
  });
});
