/**
 * A load process, forked by the benchmark so that load generation does not share an event
 * loop with the orchestrator (which triggers handoffs and samples CPU). Two kinds:
 *
 * - `cannon`: autocannon's keep-alive clients, every response and error timestamped;
 * - `probe`: @handoff/testkit's LoadDriver as a fresh-connection prober (and, for a stateful
 *   daemon, writers keeping a ledger of acknowledged writes), plus optional idle keep-alive
 *   connections held open for the scale curve (once the prober stopped, one more request on
 *   each tells which are still open and usable);
 * - `ws`: WebSocket clients of the ws-chat example daemon, idle or with a light message load,
 *   reconnecting when the server closes them (ws-clients.ts).
 *
 * It sends `{ type: 'ready' }` once running, runs until the parent sends `{ type: 'stop' }`
 * (or its own time bound passes), then sends `{ type: 'result', ... }` and exits.
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import autocannon from 'autocannon';
import { LoadDriver } from '@handoff/testkit';
import type { RequestResult } from '@handoff/testkit';
import type { CannonResult, ErrorKind, LoadConfig, ProbeResult, WorkerMessage } from './types.js';
import { wsClients } from './ws-clients.js';

const config = JSON.parse(process.argv[2] ?? '{}') as LoadConfig;
const send = (message: WorkerMessage): Promise<void> =>
  new Promise((resolve) => {
    process.send?.(message, undefined, {}, () => { resolve(); });
  });
let stopRequested: () => void = () => undefined;
const stopped = new Promise<void>((resolve) => {
  stopRequested = resolve;
});
process.on('message', (m: { type?: string }) => {
  if (m.type === 'stop') stopRequested();
});
// Never outlive the bound, nor the parent.
setTimeout(stopRequested, config.maxDurationMs).unref();
let reported = false;
process.on('disconnect', () => {
  if (!reported) process.exit(0);
});

function classify(error: NodeJS.ErrnoException): ErrorKind {
  if (error.code === 'ECONNREFUSED') return 'refused';
  if (error.code === 'ECONNRESET' || error.code === 'EPIPE' || error.message === 'socket hang up') return 'reset';
  if (error.message === 'request timed out' || error.code === 'ETIMEDOUT') return 'timeout';
  return 'other';
}

/** The parts of autocannon's Client that the hook below touches (autocannon 9, lib/httpClient.js). */
interface CannonClient {
  conn: Socket;
  on(event: 'headers', listener: (info: { shouldKeepAlive?: boolean }) => void): void;
  _connect(): void;
  pipelinedRequests: { size(): number; clear(): void };
}

async function cannon(): Promise<CannonResult> {
  const at: number[] = [];
  const latency: number[] = [];
  const status: number[] = [];
  const errors: { at: number; kind: ErrorKind }[] = [];
  const instance = autocannon({
    url: `http://127.0.0.1:${config.port}/health`,
    connections: config.connections,
    duration: Math.ceil(config.maxDurationMs / 1000),
    timeout: config.requestTimeoutMs / 1000,
    // autocannon reconnects silently when the server closes a connection with a request in
    // flight, and then reports the next response against the lost request's start. A real
    // client sees that request fail: count it as a reset and forget it, so latencies stay
    // per request. Unless the server had announced the close (Connection: close): a correct
    // client would not have sent another request on that connection, so that is no error.
    // On a connect error, forget the request written to the dead socket too.
    setupClient: (c) => {
      const client = c as unknown as CannonClient;
      let closeAnnounced = false;
      client.on('headers', (info: { shouldKeepAlive?: boolean }) => {
        closeAnnounced = info.shouldKeepAlive === false;
      });
      const connect = client._connect.bind(client);
      client._connect = () => {
        closeAnnounced = false;
        connect();
        client.conn.prependListener('end', () => {
          if (client.pipelinedRequests.size() > 0 && !closeAnnounced) errors.push({ at: Date.now(), kind: 'reset' });
          client.pipelinedRequests.clear();
        });
        client.conn.prependListener('error', () => {
          client.pipelinedRequests.clear();
        });
      };
    },
  }, () => undefined); // with a callback, autocannon returns its instance (events) rather than a promise
  instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
    at.push(Date.now());
    latency.push(responseTime);
    status.push(statusCode);
  });
  instance.on('reqError', (error: NodeJS.ErrnoException) => {
    errors.push({ at: Date.now(), kind: classify(error) });
  });
  const done = new Promise<void>((resolve) => instance.once('done', () => { resolve(); }));
  const started = Date.now();
  void send({ type: 'ready' });
  await Promise.race([stopped, done]);
  const ended = Date.now();
  instance.stop();
  await done;
  return { kind: 'cannon', startedAt: started, endedAt: ended, at, latency, status, errors };
}

/**
 * One idle keep-alive connection, a plain socket (not an http.Agent's: an agent would open a
 * new connection for a request when the server had closed this one). `closed`: it saw 'end'
 * or 'close' (the server closed it, or it broke) before the worker closed it.
 */
interface IdleConnection {
  readonly socket: Socket;
  closed: boolean;
  /** Resolves with the status of the response being read (0: the connection closed first). */
  answer: ((status: number) => void) | null;
  buffer: Buffer;
}

const REQUEST = (port: number): string => `GET /health HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`;

/** Reads one response off `c.buffer`: its status once complete (Content-Length body), else null. */
function takeResponse(c: IdleConnection): number | null {
  const end = c.buffer.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const head = c.buffer.subarray(0, end).toString('latin1');
  const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
  if (c.buffer.length < end + 4 + length) return null;
  c.buffer = c.buffer.subarray(end + 4 + length);
  return Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
}

/** Sends one GET on `c` and waits for its response: its status, 0 when closed first or after `timeoutMs`. */
function ask(c: IdleConnection, timeoutMs: number): Promise<number> {
  if (c.closed || c.socket.destroyed) return Promise.resolve(0);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      c.answer = null;
      resolve(0);
    }, timeoutMs);
    c.answer = (status) => {
      clearTimeout(timer);
      c.answer = null;
      resolve(status);
    };
    c.socket.write(REQUEST(config.port));
  });
}

/** Opens one connection and has it answered once: null when that fails. */
function openIdle(): Promise<IdleConnection | null> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: config.port });
    const c: IdleConnection = { socket, closed: false, answer: null, buffer: Buffer.alloc(0) };
    const closed = (): void => {
      c.closed = true;
      c.answer?.(0);
    };
    socket.on('data', (chunk: Buffer) => {
      c.buffer = c.buffer.length === 0 ? chunk : Buffer.concat([c.buffer, chunk]);
      const status = takeResponse(c);
      if (status !== null) c.answer?.(status);
    });
    socket.on('end', closed);
    socket.on('close', closed);
    socket.on('error', closed);
    socket.once('connect', () => {
      void ask(c, config.requestTimeoutMs).then((status) => {
        resolve(status >= 200 && status < 300 ? c : null);
      });
    });
    // A connect that fails closes the socket: nothing to wait for.
    socket.once('close', () => {
      resolve(null);
    });
  });
}

/** Runs `f` over `items`, at most `limit` at once. */
async function pool<T, R>(items: readonly T[], limit: number, f: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}

/** Opens `n` keep-alive connections, each answered once, then left idle. */
async function holdIdle(n: number): Promise<IdleConnection[]> {
  // At most 1,000 connecting at once (the listen backlog is 4,096).
  const opened = await pool(Array.from({ length: n }, (_, i) => i), 1_000, () => openIdle());
  return opened.filter((c): c is IdleConnection => c !== null && !c.closed);
}

/**
 * After the handoffs: how many idle connections the server had closed, and how many are kept:
 * still open, and answering one more request on the same connection.
 */
async function checkIdle(idle: readonly IdleConnection[]): Promise<{ kept: number; closed: number }> {
  const closed = idle.filter((c) => c.closed || c.socket.destroyed).length;
  const statuses = await pool(idle, 1_000, (c) => ask(c, config.requestTimeoutMs));
  return { kept: statuses.filter((s) => s >= 200 && s < 300).length, closed };
}

async function probe(): Promise<ProbeResult> {
  const results: RequestResult[] = [];
  const idle = config.idleConnections > 0 ? await holdIdle(config.idleConnections) : [];
  const idleOpen = idle.length;
  const driver = new LoadDriver({
    port: config.port,
    readers: 0,
    writers: config.writers,
    probeEveryMs: config.probeEveryMs,
    requestTimeoutMs: config.requestTimeoutMs,
    maxDurationMs: config.maxDurationMs,
    onResult: (r) => results.push(r),
  }).start();
  void send({ type: 'ready' });
  await stopped;
  await driver.stop();
  // Once the prober stopped (it measures nothing any more): one request on each idle connection.
  const { kept, closed } = idle.length > 0 ? await checkIdle(idle) : { kept: 0, closed: 0 };
  for (const c of idle) c.socket.destroy();
  return { kind: 'probe', results, ledger: [...driver.ledger], idleOpen, idleKept: kept, idleClosed: closed };
}

const result = config.kind === 'cannon' ? await cannon() : config.kind === 'ws' ? await wsClients(config, stopped, () => send({ type: 'ready' })) : await probe();
reported = true;
await send({ type: 'result', result });
process.disconnect();
