/**
 * A load driver against an HTTP daemon on loopback: keep-alive readers, a prober that opens
 * a fresh connection every few milliseconds (and measures how long each takes to be
 * served), and a writer that keeps a ledger of acknowledged writes. Every loop is bounded
 * in time and count.
 *
 * The daemon answers GET {@link LoadOptions.readPath} (default `/health`) and stores the body
 * of PUT `<writePrefix><key>` (default `/kv/`), answering 2xx once it is durable, and returns
 * it on GET of the same path — the HTTP API of the example key-value daemon.
 */
import { Agent, request } from 'node:http';

/** Options of {@link LoadDriver}. */
export interface LoadOptions {
  readonly host?: string;
  readonly port: number;
  /** Keep-alive reader loops (GET `readPath`). Default 8. */
  readonly readers?: number;
  /** What readers and the prober GET. Default `/health`. */
  readonly readPath?: string;
  /** Where writes go: PUT (and read back with GET) `<writePrefix><key>`. Default `/kv/`. */
  readonly writePrefix?: string;
  /** Interval between fresh-connection probes. Default 5 ms; 0 disables the prober. */
  readonly probeEveryMs?: number;
  /** Writer loops (PUT `<writePrefix><key>`), each with its own keys. Default 1; 0 disables. */
  readonly writers?: number;
  /** A request slower than this is a timeout. Default 10 s. */
  readonly requestTimeoutMs?: number;
  /** Hard bound: the driver stops itself after this. Default 5 min. */
  readonly maxDurationMs?: number;
  /** Hard bound on requests. Default 5 million. */
  readonly maxRequests?: number;
  /** Called as each request settles: for timelines (a benchmark's latency over time). */
  readonly onResult?: ((result: RequestResult) => void) | undefined;
}

/** One settled request, as {@link LoadOptions.onResult} sees it. */
export interface RequestResult {
  readonly role: Role;
  /** Epoch milliseconds. */
  readonly startedAt: number;
  readonly endedAt: number;
  /** Null when it got a 2xx. */
  readonly error: keyof ErrorCounts | null;
}

/** Errors by kind. */
export interface ErrorCounts {
  refused: number;
  reset: number;
  timeout: number;
  non2xx: number;
  other: number;
}

/** What the load saw. */
export interface LoadReport {
  readonly requests: number;
  readonly ok: number;
  readonly errors: ErrorCounts;
  readonly byRole: Readonly<Record<'reader' | 'prober' | 'writer', { requests: number; ok: number; errors: ErrorCounts }>>;
  readonly acknowledgedWrites: number;
  /** The slowest fresh connection, connect to response: the longest stall with nobody accepting. */
  readonly maxProbeMs: number;
  readonly probes: number;
  /** Up to 20 error descriptions, for failure messages. */
  readonly samples: readonly string[];
}

/** What a request was for: a keep-alive read, a fresh-connection probe, a ledger write. */
export type Role = 'reader' | 'prober' | 'writer';

function emptyCounts(): ErrorCounts {
  return { refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 };
}

function classify(error: NodeJS.ErrnoException): keyof ErrorCounts {
  if (error.code === 'ECONNREFUSED') return 'refused';
  if (error.code === 'ECONNRESET' || error.code === 'EPIPE' || error.message === 'socket hang up') return 'reset';
  if (error.code === 'ETIMEDOUT') return 'timeout';
  return 'other';
}

/** Runs load until {@link LoadDriver.stop}. */
export class LoadDriver {
  readonly #o: Required<LoadOptions>;
  readonly #agent: Agent;
  readonly #ledger = new Map<string, string>();
  readonly #byRole: Record<Role, { requests: number; ok: number; errors: ErrorCounts }> = {
    reader: { requests: 0, ok: 0, errors: emptyCounts() },
    prober: { requests: 0, ok: 0, errors: emptyCounts() },
    writer: { requests: 0, ok: 0, errors: emptyCounts() },
  };
  readonly #samples: string[] = [];
  #maxProbeMs = 0;
  #probes = 0;
  #running = false;
  #loops: Promise<void>[] = [];
  #deadline = 0;
  #requests = 0;
  #errorTotal = 0;

  constructor(options: LoadOptions) {
    this.#o = {
      host: '127.0.0.1',
      readers: 8,
      readPath: '/health',
      writePrefix: '/kv/',
      probeEveryMs: 5,
      writers: 1,
      requestTimeoutMs: 10_000,
      maxDurationMs: 300_000,
      maxRequests: 5_000_000,
      onResult: undefined,
      ...options,
    };
    this.#agent = new Agent({ keepAlive: true, maxSockets: this.#o.readers + this.#o.writers });
  }

  /** Where the writes went (for {@link verifyLedger}). */
  get writePrefix(): string {
    return this.#o.writePrefix;
  }

  /** Acknowledged writes: key -> value. */
  get ledger(): ReadonlyMap<string, string> {
    return this.#ledger;
  }

  start(): this {
    this.#running = true;
    this.#deadline = Date.now() + this.#o.maxDurationMs;
    for (let i = 0; i < this.#o.readers; i++) this.#loops.push(this.#loop(() => this.#call('reader', 'GET', this.#o.readPath)));
    for (let w = 0; w < this.#o.writers; w++) {
      let seq = 0;
      this.#loops.push(
        this.#loop(async () => {
          const key = `w${w}-${seq++}`;
          const value = `${key}:${Math.random().toString(36).slice(2)}`;
          if (await this.#call('writer', 'PUT', `${this.#o.writePrefix}${key}`, value)) this.#ledger.set(key, value);
        }),
      );
    }
    if (this.#o.probeEveryMs > 0) this.#loops.push(this.#probeLoop());
    return this;
  }

  /** Waits until at least `n` more requests succeed (a sign the daemon serves), bounded by `timeoutMs`. */
  async waitForProgress(n: number, timeoutMs = 10_000): Promise<void> {
    const target = this.report().ok + n;
    const deadline = Date.now() + timeoutMs;
    while (this.report().ok < target) {
      if (Date.now() > deadline) throw new Error(`load made no progress: ${JSON.stringify(this.report())}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** Stops the loops, waits for requests in flight, and reports. */
  async stop(): Promise<LoadReport> {
    this.#running = false;
    await Promise.all(this.#loops);
    this.#loops = [];
    this.#agent.destroy();
    return this.report();
  }

  report(): LoadReport {
    const errors = emptyCounts();
    let requests = 0;
    let ok = 0;
    for (const r of Object.values(this.#byRole)) {
      requests += r.requests;
      ok += r.ok;
      for (const k of Object.keys(errors) as (keyof ErrorCounts)[]) errors[k] += r.errors[k];
    }
    return {
      requests,
      ok,
      errors,
      byRole: structuredClone(this.#byRole),
      acknowledgedWrites: this.#ledger.size,
      maxProbeMs: this.#maxProbeMs,
      probes: this.#probes,
      samples: [...this.#samples],
    };
  }

  #live(): boolean {
    return this.#running && Date.now() < this.#deadline && this.#requests < this.#o.maxRequests;
  }

  async #loop(step: () => Promise<unknown>): Promise<void> {
    while (this.#live()) {
      const errorsBefore = this.#errorTotal;
      await step();
      // Back off briefly after an error so a dead server is not spun on.
      if (this.#errorTotal > errorsBefore) await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  async #probeLoop(): Promise<void> {
    const inflight = new Set<Promise<unknown>>();
    while (this.#live()) {
      if (inflight.size < 50) {
        const started = Date.now();
        const p = this.#call('prober', 'GET', this.#o.readPath, undefined, false).then(() => {
          this.#probes += 1;
          this.#maxProbeMs = Math.max(this.#maxProbeMs, Date.now() - started);
        });
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
      }
      await new Promise((resolve) => setTimeout(resolve, this.#o.probeEveryMs));
    }
    await Promise.all(inflight);
  }

  /** One request; true when it got a 2xx. Never rejects. */
  #call(role: Role, method: string, path: string, body?: string, keepAlive = true): Promise<boolean> {
    this.#requests += 1;
    const stats = this.#byRole[role];
    stats.requests += 1;
    const startedAt = Date.now();
    return new Promise((resolve) => {
      let settled = false;
      const fail = (kind: keyof ErrorCounts, what: string): void => {
        if (settled) return;
        settled = true;
        this.#o.onResult?.({ role, startedAt, endedAt: Date.now(), error: kind });
        stats.errors[kind] += 1;
        this.#errorTotal += 1;
        if (this.#samples.length < 20) this.#samples.push(`${role} ${method} ${path}: ${what}`);
        resolve(false);
      };
      const req = request(
        { host: this.#o.host, port: this.#o.port, method, path, agent: keepAlive ? this.#agent : false, headers: body === undefined ? {} : { 'content-length': Buffer.byteLength(body) } },
        (res) => {
          res.resume();
          res.on('error', (e: NodeJS.ErrnoException) => {
            fail(classify(e), e.message);
          });
          res.on('end', () => {
            if (settled) return;
            if ((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300) {
              settled = true;
              this.#o.onResult?.({ role, startedAt, endedAt: Date.now(), error: null });
              stats.ok += 1;
              resolve(true);
            } else fail('non2xx', `status ${res.statusCode ?? '?'}`);
          });
        },
      );
      req.setTimeout(this.#o.requestTimeoutMs, () => {
        const e = new Error(`no answer within ${this.#o.requestTimeoutMs} ms`) as NodeJS.ErrnoException;
        e.code = 'ETIMEDOUT';
        req.destroy(e);
      });
      req.on('error', (e: NodeJS.ErrnoException) => {
        fail(classify(e), `${e.code ?? ''} ${e.message}`);
      });
      req.end(body);
    });
  }
}

/** Reads back every acknowledged write; returns the keys that are missing or wrong. */
export async function verifyLedger(port: number, ledger: ReadonlyMap<string, string>, host = '127.0.0.1', writePrefix = '/kv/'): Promise<string[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  const lost: string[] = [];
  const entries = [...ledger];
  const get = (key: string): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      request({ host, port, path: `${writePrefix}${key}`, agent }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
          resolve({ status: res.statusCode ?? 0, body });
        });
      })
        .on('error', reject)
        .end();
    });
  try {
    for (let i = 0; i < entries.length; i += 8) {
      await Promise.all(
        entries.slice(i, i + 8).map(async ([key, value]) => {
          const r = await get(key);
          if (r.status !== 200 || r.body !== value) lost.push(`${key} (status ${r.status})`);
        }),
      );
    }
  } finally {
    agent.destroy();
  }
  return lost;
}
