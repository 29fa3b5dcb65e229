/**
 * A load process, forked by the benchmark so that load generation does not share an event
 * loop with the orchestrator (which triggers handoffs and samples CPU). Two kinds:
 *
 * - `cannon`: autocannon's keep-alive clients, every response and error timestamped;
 * - `probe`: @handoff/testkit's LoadDriver as a fresh-connection prober (and, for a stateful
 *   daemon, writers keeping a ledger of acknowledged writes), plus optional idle keep-alive
 *   connections held open for the scale curve.
 *
 * It sends `{ type: 'ready' }` once running, runs until the parent sends `{ type: 'stop' }`
 * (or its own time bound passes), then sends `{ type: 'result', ... }` and exits.
 */
import { request, Agent } from 'node:http';
import type { Socket } from 'node:net';
import autocannon from 'autocannon';
import { LoadDriver } from '@handoff/testkit';
import type { RequestResult } from '@handoff/testkit';
import type { CannonResult, ErrorKind, LoadConfig, ProbeResult, WorkerMessage } from './types.js';

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

/** Opens `n` keep-alive connections, each answered once, then left idle. */
async function holdIdle(n: number): Promise<{ agent: Agent; open: () => number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: n, maxFreeSockets: n, timeout: 0 });
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      request({ host: '127.0.0.1', port: config.port, path: '/health', agent }, (res) => {
        res.resume().on('end', resolve);
      })
        .on('error', reject)
        .end();
    });
  // All at once, so the agent cannot reuse a socket another request has freed.
  await Promise.all(Array.from({ length: n }, one));
  const open = (): number => Object.values(agent.freeSockets).reduce((sum, list) => sum + (list?.length ?? 0), 0);
  return { agent, open };
}

async function probe(): Promise<ProbeResult> {
  const results: RequestResult[] = [];
  const idle = config.idleConnections > 0 ? await holdIdle(config.idleConnections) : null;
  const idleOpen = idle?.open() ?? 0;
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
  idle?.agent.destroy();
  return { kind: 'probe', results, ledger: [...driver.ledger], idleOpen };
}

const result = config.kind === 'cannon' ? await cannon() : await probe();
reported = true;
await send({ type: 'result', result });
process.disconnect();
