import { appendFileSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KvStore } from './store.js';

let dir: string;
let log: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kv-store-test-'));
  log = join(dir, 'kv.log');
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const record = (k: string, v: string): string => `${JSON.stringify({ k, v })}\n`;
const records = (from: number, to: number, prefix = 'key'): string => {
  let text = '';
  for (let i = from; i < to; i++) text += record(`${prefix}-${i}`, `value-${i}`);
  return text;
};

/** Everything a store holds, by reading back each key of `keys`. */
function contents(store: KvStore, keys: readonly string[]): Record<string, string | undefined> {
  return Object.fromEntries(keys.map((k) => [k, store.get(k)]));
}

describe('KvStore.open', () => {
  it('replays the log, counts records as the revision, and cuts a torn last record (synced)', async () => {
    writeFileSync(log, `${records(0, 3)}{"k":"torn","v":"ha`);
    const store = await KvStore.open(dir);
    try {
      expect(store.revision).toBe(3);
      expect(store.get('key-2')).toBe('value-2');
      expect(store.get('torn')).toBeUndefined();
      expect(readFileSync(log, 'utf8')).toBe(records(0, 3));
      expect(store.loaded).toEqual({ mode: 'full', records: 3 });
      expect(await store.put('key-0', 'again')).toBe(4);
    } finally {
      await store.close();
    }
    const reopened = await KvStore.open(dir);
    expect([reopened.revision, reopened.get('key-0'), reopened.size]).toEqual([4, 'again', 3]);
    await reopened.close();
  });

  it('dropLast opens one record behind and cuts nothing', async () => {
    writeFileSync(log, `${records(0, 3)}{"k":"torn"`);
    const store = await KvStore.open(dir, { dropLast: true });
    expect([store.revision, store.get('key-1'), store.get('key-2')]).toEqual([2, 'value-1', undefined]);
    await store.close();
    expect(readFileSync(log, 'utf8')).toBe(`${records(0, 3)}{"k":"torn"`);
  });

  it('refuses a complete line that is not a record, naming the line, rather than skip or count it', async () => {
    writeFileSync(log, `${records(0, 2)}{"k":"a","v":1}\n${records(2, 3)}`);
    await expect(KvStore.open(dir)).rejects.toThrow(/kv\.log line 3 is not a record \(k and v must be strings\); the log is damaged/);
    writeFileSync(log, `${records(0, 1)}not json\n`);
    await expect(KvStore.open(dir)).rejects.toThrow(/kv\.log line 2 is not a record/);
  });

  it('replays records longer than a read chunk and non-ASCII text across chunk boundaries', async () => {
    const long = 'é€𝄞'.repeat(400_000); // about 3.6 MB of UTF-8
    writeFileSync(log, `${records(0, 10)}${record('long', long)}${record('ключ', 'значение')}`);
    const store = await KvStore.open(dir);
    expect([store.revision, store.get('long') === long, store.get('ключ')]).toEqual([12, true, 'значение']);
    await store.close();
  });

  it('replays in slices: the event loop gets turns during a long replay', async () => {
    writeFileSync(log, records(0, 200_000));
    let turns = 0;
    const ticker = setInterval(() => (turns += 1), 1);
    try {
      const store = await KvStore.open(dir);
      expect(store.revision).toBe(200_000);
      await store.close();
    } finally {
      clearInterval(ticker);
    }
    expect(turns).toBeGreaterThan(0);
  });
});

describe('KvStore.preload and catchUp', () => {
  it('preload reads without writing: no file is created, a torn tail is left alone', async () => {
    const none = await KvStore.preload(dir);
    expect([none.revision, none.offset, none.file, none.partial]).toEqual([0, 0, null, false]);
    expect(existsSync(log)).toBe(false);
    writeFileSync(log, `${records(0, 5)}{"k":"half`);
    const before = statSync(log);
    const preloaded = await KvStore.preload(dir);
    expect([preloaded.revision, preloaded.offset]).toEqual([5, Buffer.byteLength(records(0, 5))]);
    expect(readFileSync(log, 'utf8')).toBe(`${records(0, 5)}{"k":"half`);
    expect(statSync(log).mtimeMs).toBe(before.mtimeMs);
  });

  it('a preload told to stop returns what it replayed, up to a chunk boundary, and catchUp finishes it', async () => {
    writeFileSync(log, records(0, 60_000)); // about 1.4 MiB: two reads
    const stopped = new AbortController();
    stopped.abort();
    const none = await KvStore.preload(dir, stopped.signal);
    expect([none.partial, none.revision, none.offset]).toEqual([true, 0, 0]);
    let checks = 0;
    const afterOneChunk = { get aborted() { return checks++ > 0; } } as AbortSignal;
    const part = await KvStore.preload(dir, afterOneChunk);
    expect(part.partial).toBe(true);
    expect(part.revision).toBeGreaterThan(0);
    expect(part.revision).toBeLessThan(60_000);
    expect(part.offset).toBe(Buffer.byteLength(records(0, part.revision)));
    appendFileSync(log, records(60_000, 60_010));
    const store = await KvStore.catchUp(dir, part);
    expect(store.loaded).toEqual({ mode: 'tail', fromOffset: part.offset, preloaded: part.revision, records: 60_010 - part.revision });
    expect([store.revision, store.get('key-0'), store.get('key-60009')]).toEqual([60_010, 'value-0', 'value-60009']);
    await store.close();
  });

  it('catchUp replays only the tail appended since the preload, including a record that was torn at preload time', async () => {
    writeFileSync(log, `${records(0, 1_000)}{"k":"key-1000","v":"val`);
    const preloaded = await KvStore.preload(dir);
    expect(preloaded.revision).toBe(1_000);
    // The incumbent's write of that record completes; it appends more, then seals.
    appendFileSync(log, `ue-1000"}\n${records(1_001, 1_200)}${record('key-5', 'overwritten')}`);
    const store = await KvStore.catchUp(dir, preloaded);
    try {
      expect(store.loaded).toEqual({ mode: 'tail', fromOffset: Buffer.byteLength(records(0, 1_000)), preloaded: 1_000, records: 201 });
      expect(store.revision).toBe(1_201);
      expect(contents(store, ['key-0', 'key-5', 'key-1000', 'key-1199'])).toEqual({ 'key-0': 'value-0', 'key-5': 'overwritten', 'key-1000': 'value-1000', 'key-1199': 'value-1199' });
      expect(await store.put('after', 'catch-up')).toBe(1_202);
    } finally {
      await store.close();
    }
    const full = await KvStore.open(dir);
    expect(full.revision).toBe(1_202);
    await full.close();
  });

  it('catchUp cuts a torn tail (the lock is held then), as open does', async () => {
    writeFileSync(log, records(0, 10));
    const preloaded = await KvStore.preload(dir);
    appendFileSync(log, `${records(10, 12)}{"k":"torn","v":"x`);
    const store = await KvStore.catchUp(dir, preloaded);
    expect([store.loaded.mode, store.revision, store.get('torn')]).toEqual(['tail', 12, undefined]);
    await store.close();
    expect(readFileSync(log, 'utf8')).toBe(records(0, 12));
  });

  it('catchUp with nothing preloaded (no log yet) replays the whole file', async () => {
    const preloaded = await KvStore.preload(dir);
    writeFileSync(log, records(0, 7));
    const store = await KvStore.catchUp(dir, preloaded);
    expect([store.loaded.mode, store.revision]).toEqual(['tail', 7]);
    await store.close();
  });

  it('reloads in full when the log was replaced since the preload (another file: device and inode)', async () => {
    writeFileSync(log, records(0, 100));
    const preloaded = await KvStore.preload(dir);
    writeFileSync(join(dir, 'kv.log.new'), records(0, 100, 'other'));
    renameSync(join(dir, 'kv.log.new'), log);
    const store = await KvStore.catchUp(dir, preloaded);
    expect(store.loaded).toEqual({ mode: 'full', records: 100, reason: 'the log was replaced since the preload' });
    expect([store.get('key-1'), store.get('other-1')]).toEqual([undefined, 'value-1']);
    await store.close();
  });

  it('reloads in full when the log is shorter than what was preloaded', async () => {
    writeFileSync(log, records(0, 100));
    const preloaded = await KvStore.preload(dir);
    truncateSync(log, Buffer.byteLength(records(0, 50)));
    const store = await KvStore.catchUp(dir, preloaded);
    expect(store.loaded.mode).toBe('full');
    expect(store.loaded).toMatchObject({ reason: expect.stringContaining('shorter') });
    expect([store.revision, store.get('key-49'), store.get('key-50')]).toEqual([50, 'value-49', undefined]);
    await store.close();
  });

  it('reloads in full when preloaded bytes were cut off and rewritten (a failed write replaced by others of the same length)', async () => {
    // The preload read a record the incumbent then cut off (its fsync failed, never
    // acknowledged) and wrote another in its place: same length, so neither the size nor
    // the record count tells; the bytes do.
    writeFileSync(log, `${records(0, 100)}${record('key-x', 'phantom')}`);
    const preloaded = await KvStore.preload(dir);
    truncateSync(log, Buffer.byteLength(records(0, 100)));
    appendFileSync(log, `${record('key-y', 'durable')}${records(100, 110)}`);
    const store = await KvStore.catchUp(dir, preloaded);
    expect(store.loaded).toEqual({ mode: 'full', records: 111, reason: 'the preloaded part of the log changed since the preload' });
    expect([store.get('key-x'), store.get('key-y'), store.revision]).toEqual([undefined, 'durable', 111]);
    await store.close();
  });
});
