/**
 * The key-value store: a map rebuilt from an append-only log in the data directory. A write
 * is acknowledged only after its record is fsynced; concurrent writes share one fsync
 * (group commit). The revision is the number of records.
 */
import { closeSync, fstatSync, fsyncSync, openSync, readFileSync, ftruncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';

const LOG = 'kv.log';

interface PendingWrite {
  readonly line: string;
  readonly resolve: (revision: number) => void;
  readonly reject: (error: Error) => void;
}

export class KvStore {
  readonly #map = new Map<string, string>();
  #fd: number;
  #revision = 0;
  #pending: PendingWrite[] = [];
  #flushing: Promise<void> | null = null;
  #closed = false;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Opens (or creates) the log and replays it; a torn last record (a crash mid-append) is cut off. */
  static open(dataDir: string, options: { readonly dropLast?: boolean } = {}): KvStore {
    const path = join(dataDir, LOG);
    const fd = openSync(path, 'a+', 0o600);
    const store = new KvStore(fd);
    const text = readFileSync(path, 'utf8');
    let valid = 0;
    const lines = text.split('\n');
    const records = lines.slice(0, -1); // the part after the last newline is torn or empty
    const replay = options.dropLast ? records.slice(0, -1) : records;
    for (const line of replay) {
      const record = JSON.parse(line) as { k: string; v: string };
      store.#map.set(record.k, record.v);
      store.#revision += 1;
      valid += Buffer.byteLength(line) + 1;
    }
    if (!options.dropLast && valid !== Buffer.byteLength(text)) ftruncateSync(fd, valid);
    return store;
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
      this.#pending.push({ line: `${JSON.stringify({ k: key, v: value })}\n`, resolve, reject });
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
      writeSync(this.#fd, batch.map((w) => w.line).join(''));
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
      const record = JSON.parse(w.line) as { k: string; v: string };
      this.#map.set(record.k, record.v);
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
