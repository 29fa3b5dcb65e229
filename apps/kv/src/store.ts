/**
 * The key-value store: a map rebuilt from an append-only log in the data directory. A write
 * is acknowledged only after its record is fsynced; concurrent writes share one fsync
 * (group commit). The revision is the number of records (PROTOCOL.md §16).
 *
 * The log is replayed in slices: chunks of the file are read and parsed, and the event loop
 * gets a turn every few milliseconds, so that a daemon replaying a large log still sends its
 * heartbeats (PROTOCOL.md §9).
 *
 * A successor can {@link KvStore.preload} the log before its Hello — read-only, without the
 * lock, while the incumbent still writes it — and {@link KvStore.catchUp} after Begin, with
 * the lock held: only the records appended since are replayed, unless the file is no longer
 * the one it read (replaced, shortened, or its preloaded bytes changed), in which case it is
 * replayed in full.
 */
import { closeSync, fstatSync, fsyncSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { crc32 } from 'node:zlib';

const LOG = 'kv.log';
/** How much of the log one read takes. */
const CHUNK_BYTES = 1 << 20;
/** The longest stretch of replay work between two turns of the event loop. */
const SLICE_MS = 10;
const NEWLINE = 0x0a;

interface PendingWrite {
  readonly key: string;
  readonly value: string;
  readonly line: string;
  readonly resolve: (revision: number) => void;
  readonly reject: (error: Error) => void;
}

/** The log as replayed up to a byte offset: what {@link KvStore.preload} returns. */
export interface Preloaded {
  readonly map: Map<string, string>;
  /** Complete records replayed. */
  readonly revision: number;
  /** Bytes of complete records replayed: the tail starts here. */
  readonly offset: number;
  /** CRC-32 of the bytes [0, offset), to tell that they did not change since. */
  readonly crc: number;
  /** The file's identity when it was read; null when there was no log yet. */
  readonly file: { readonly dev: number; readonly ino: number } | null;
  /** True when the preload was told to stop before the end of the file (the tail is longer then). */
  readonly partial: boolean;
}

/** How a store's data was loaded. */
export type LoadReport =
  | { readonly mode: 'full'; readonly records: number; readonly reason?: string }
  | { readonly mode: 'tail'; readonly fromOffset: number; readonly preloaded: number; readonly records: number };

/** A log being replayed: the map, and how far. */
interface Replay {
  map: Map<string, string>;
  revision: number;
  offset: number;
  crc: number;
  /** Whether to keep computing `crc` (a preload does; a store opened for writing does not need it). */
  readonly withCrc: boolean;
  /** Bytes after the last newline at the end of the file: a torn record. */
  torn: number;
  /** Lines seen, for error messages. */
  line: number;
  /** Held back by one record (KV_STALE's `dropLast`): the last complete record, not yet applied. */
  held: { key: string; value: string; bytes: number } | null;
  /** Stopped by its signal before the end of the file. */
  stopped: boolean;
}

/** Gives the event loop a turn. */
const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function parseRecord(text: string, path: string, line: number): { k: string; v: string } {
  let record: unknown;
  try {
    record = JSON.parse(text);
  } catch (error) {
    throw new Error(`${path} line ${line} is not a record (${error instanceof Error ? error.message : String(error)}); the log is damaged`, { cause: error });
  }
  if (typeof record !== 'object' || record === null || Array.isArray(record)) throw new Error(`${path} line ${line} is not a record (not a JSON object); the log is damaged`);
  const { k, v } = record as { k?: unknown; v?: unknown };
  if (typeof k !== 'string' || typeof v !== 'string') throw new Error(`${path} line ${line} is not a record (k and v must be strings); the log is damaged`);
  return { k, v };
}

/**
 * Replays the log in `fd` from `replay.offset` to its end, in slices. A record is applied
 * only once its newline is read; what follows the last newline is left (`replay.torn`).
 * When `signal` aborts, it stops between two chunks: `offset` and `crc` then cover exactly
 * the records applied.
 */
async function replayFrom(fd: number, path: string, replay: Replay, holdLast: boolean, signal?: AbortSignal): Promise<void> {
  const buffer = Buffer.allocUnsafe(CHUNK_BYTES);
  let carry: Buffer | null = null; // the start of a record that runs past the chunk read
  let position = replay.offset;
  let sliceStart = performance.now();
  for (;;) {
    if (signal?.aborted) {
      replay.stopped = true;
      return;
    }
    const n = readSync(fd, buffer, 0, CHUNK_BYTES, position);
    if (n === 0) break;
    position += n;
    const read = buffer.subarray(0, n);
    const last = read.lastIndexOf(NEWLINE);
    if (last < 0) {
      carry = carry ? Buffer.concat([carry, read]) : Buffer.from(read);
      continue;
    }
    // Complete records: the carried start of one, and this chunk up to its last newline.
    const complete = carry ? Buffer.concat([carry, read.subarray(0, last + 1)]) : read.subarray(0, last + 1);
    carry = last + 1 < n ? Buffer.from(read.subarray(last + 1)) : null;
    if (replay.withCrc) replay.crc = crc32(complete, replay.crc);
    // A newline byte never occurs inside a UTF-8 sequence: splitting on it is safe.
    const lines = complete.toString('utf8').split('\n');
    lines.pop(); // empty: `complete` ends with a newline
    for (let i = 0; i < lines.length; i++) {
      const text = lines[i] ?? '';
      replay.line += 1;
      const { k, v } = parseRecord(text, path, replay.line);
      const bytes = Buffer.byteLength(text) + 1;
      if (holdLast) {
        if (replay.held) apply(replay, replay.held.key, replay.held.value, replay.held.bytes);
        replay.held = { key: k, value: v, bytes };
      } else {
        apply(replay, k, v, bytes);
      }
      if ((i & 255) === 255 && performance.now() - sliceStart >= SLICE_MS) {
        await yieldToLoop();
        sliceStart = performance.now();
      }
    }
    if (performance.now() - sliceStart >= SLICE_MS) {
      await yieldToLoop();
      sliceStart = performance.now();
    }
  }
  replay.torn = carry?.length ?? 0;
}

function apply(replay: Replay, key: string, value: string, bytes: number): void {
  replay.map.set(key, value);
  replay.revision += 1;
  replay.offset += bytes;
}

/** The CRC-32 of the bytes [0, end) of `fd`, read in slices; null when the file is shorter. */
async function crcOf(fd: number, end: number): Promise<number | null> {
  const buffer = Buffer.allocUnsafe(CHUNK_BYTES);
  let crc = 0;
  let position = 0;
  let sliceStart = performance.now();
  while (position < end) {
    const n = readSync(fd, buffer, 0, Math.min(CHUNK_BYTES, end - position), position);
    if (n === 0) return null;
    crc = crc32(buffer.subarray(0, n), crc);
    position += n;
    if (performance.now() - sliceStart >= SLICE_MS) {
      await yieldToLoop();
      sliceStart = performance.now();
    }
  }
  return crc;
}

function emptyReplay(withCrc: boolean): Replay {
  return { map: new Map(), revision: 0, offset: 0, crc: 0, withCrc, torn: 0, line: 0, held: null, stopped: false };
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | null)?.code === 'ENOENT';
}

export class KvStore {
  readonly #map: Map<string, string>;
  #fd: number;
  #revision: number;
  #pending: PendingWrite[] = [];
  #flushing: Promise<void> | null = null;
  #closed = false;
  /** How the data was loaded. */
  readonly loaded: LoadReport;

  private constructor(fd: number, map: Map<string, string>, revision: number, loaded: LoadReport) {
    this.#fd = fd;
    this.#map = map;
    this.#revision = revision;
    this.loaded = loaded;
  }

  /**
   * Opens (or creates) the log for writing and replays it in full; a torn last record (a
   * crash mid-append) is cut off. Call it with the data-directory lock held.
   * `dropLast` (a fault for tests): open one record behind, and cut nothing.
   */
  static async open(dataDir: string, options: { readonly dropLast?: boolean } = {}): Promise<KvStore> {
    const path = join(dataDir, LOG);
    const fd = openSync(path, 'a+', 0o600);
    try {
      return await KvStore.#replayAll(fd, path, options.dropLast ?? false);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  /**
   * Reads the log as it is now, read-only: for a successor before its Hello, while the
   * incumbent holds the lock and appends. Never writes, never creates the file, never cuts a
   * torn tail (the incumbent may be appending it). When `signal` aborts it stops early and
   * returns what it replayed (`partial`): catching up then replays a longer tail. Pass the
   * result to {@link KvStore.catchUp}.
   */
  static async preload(dataDir: string, signal?: AbortSignal): Promise<Preloaded> {
    const path = join(dataDir, LOG);
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (error) {
      if (isMissing(error)) return { map: new Map(), revision: 0, offset: 0, crc: 0, file: null, partial: false };
      throw error;
    }
    try {
      const { dev, ino } = fstatSync(fd);
      const replay = emptyReplay(true);
      await replayFrom(fd, path, replay, false, signal);
      return { map: replay.map, revision: replay.revision, offset: replay.offset, crc: replay.crc, file: { dev, ino }, partial: replay.stopped };
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Opens the log for writing (with the lock held) and brings a preload up to date: replays
   * only the records after `preloaded.offset`. When the file is not the one preloaded (its
   * device and inode differ), is shorter than the offset, or its first `offset` bytes changed
   * since (a writer cut off a failed write, and wrote others in its place), it is replayed in
   * full instead. A torn last record is cut off, as by {@link KvStore.open}. The preloaded map
   * is taken over, not copied: do not use `preloaded` afterwards.
   */
  static async catchUp(dataDir: string, preloaded: Preloaded): Promise<KvStore> {
    const path = join(dataDir, LOG);
    const fd = openSync(path, 'a+', 0o600);
    try {
      const stale = await KvStore.#changedSince(fd, preloaded);
      if (stale !== null) return await KvStore.#replayAll(fd, path, false, stale);
      const replay: Replay = { ...emptyReplay(false), map: preloaded.map, revision: preloaded.revision, offset: preloaded.offset, line: preloaded.revision };
      await replayFrom(fd, path, replay, false);
      KvStore.#cutTornTail(fd, replay);
      const loaded: LoadReport = { mode: 'tail', fromOffset: preloaded.offset, preloaded: preloaded.revision, records: replay.revision - preloaded.revision };
      return new KvStore(fd, replay.map, replay.revision, loaded);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  /** Why the preloaded bytes cannot be trusted any more; null when they can. */
  static async #changedSince(fd: number, preloaded: Preloaded): Promise<string | null> {
    if (preloaded.offset === 0) return null; // nothing preloaded: the tail is the whole file
    const { dev, ino, size } = fstatSync(fd);
    if (!preloaded.file || preloaded.file.dev !== dev || preloaded.file.ino !== ino) return 'the log was replaced since the preload';
    if (size < preloaded.offset) return `the log is shorter (${size} bytes) than what was preloaded (${preloaded.offset} bytes)`;
    // Cheap against the replay it saves (no parsing), and the only way to see a failed write
    // cut off and others written in its place while the preload read it.
    if ((await crcOf(fd, preloaded.offset)) !== preloaded.crc) return 'the preloaded part of the log changed since the preload';
    return null;
  }

  static async #replayAll(fd: number, path: string, dropLast: boolean, reason?: string): Promise<KvStore> {
    const replay = emptyReplay(false);
    await replayFrom(fd, path, replay, dropLast);
    if (!dropLast) KvStore.#cutTornTail(fd, replay);
    const loaded: LoadReport = { mode: 'full', records: replay.revision, ...(reason === undefined ? {} : { reason }) };
    return new KvStore(fd, replay.map, replay.revision, loaded);
  }

  /** Cuts what follows the last complete record: a record torn by a crash, never acknowledged. */
  static #cutTornTail(fd: number, replay: Replay): void {
    if (replay.torn === 0) return;
    ftruncateSync(fd, replay.offset);
    fsyncSync(fd);
  }

  /** Runs the record codec a few times: a cheap warm-up of the write and replay paths. */
  static warmUp(): void {
    let sink = 0;
    for (let i = 0; i < 2_000; i++) {
      const line = JSON.stringify({ k: `warm-${i}`, v: `value-${i}` });
      sink += parseRecord(line, LOG, i).v.length + decodeURIComponent(`warm%2F${i}`).length;
    }
    if (sink < 0) throw new Error('unreachable');
  }

  get revision(): number {
    return this.#revision;
  }

  get size(): number {
    return this.#map.size;
  }

  get(key: string): string | undefined {
    return this.#map.get(key);
  }

  /** Appends and fsyncs; resolves with the record's revision once it is durable. */
  put(key: string, value: string): Promise<number> {
    if (this.#closed) return Promise.reject(new Error('the store is sealed'));
    return new Promise((resolve, reject) => {
      this.#pending.push({ key, value, line: `${JSON.stringify({ k: key, v: value })}\n`, resolve, reject });
      this.#flushing ??= Promise.resolve().then(() => {
        this.#flush();
      });
    });
  }

  #flush(): void {
    this.#flushing = null;
    const batch = this.#pending;
    this.#pending = [];
    if (batch.length === 0) return;
    let start: number | null = null;
    try {
      start = fstatSync(this.#fd).size;
      const data = Buffer.from(batch.map((w) => w.line).join(''));
      // A short write (a full disk) is not an error by itself: write the rest, or fail.
      for (let written = 0; written < data.length; ) written += writeSync(this.#fd, data, written);
      fsyncSync(this.#fd);
    } catch (error) {
      // Not acknowledged: cut the batch off again, so that the revision (the record count)
      // never counts a write nobody was told succeeded.
      if (start !== null) {
        try {
          ftruncateSync(this.#fd, start);
        } catch {
          // the next open cuts nothing more: the error was reported to every writer
        }
      }
      for (const w of batch) w.reject(error as Error);
      return;
    }
    for (const w of batch) {
      this.#map.set(w.key, w.value);
      this.#revision += 1;
      w.resolve(this.#revision);
    }
  }

  /** Flushes pending writes, fsyncs and closes the log. */
  async close(): Promise<void> {
    while (this.#flushing) await this.#flushing;
    this.#closed = true;
    fsyncSync(this.#fd);
    closeSync(this.#fd);
    this.#fd = -1;
  }
}
