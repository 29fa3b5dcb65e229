/**
 * The `ws` load worker's clients: N WebSocket clients of the ws-chat example daemon
 * (apps/ws-chat: `/?name=<n>`, subprotocol `chat.v1`, each `{"seq":n}` answered with
 * `{seq,pid,build,name,count,protocol}`), run in a load worker of their own so that their
 * traffic shares no event loop with the orchestrator or the prober.
 *
 * Each client opens and is answered once before the worker says it is ready. Then, until the
 * stop: a light message load (`messagesPerSecond` over all clients, round-robin, one message in
 * flight per client at most), and a client whose connection the server closed reconnects
 * after a delay drawn from [reconnectMinMs, reconnectMaxMs] (at most `reconnectsMax` attempts
 * each). At the stop: no new message; the reconnects under way finish (bounded: the longest
 * delay and a request timeout), then none is made, the messages in flight are waited for
 * (bounded), and one last message on every open connection tells which are still usable. A
 * message of the load is waited for past the request timeout (counted late when answered
 * then): a connection being moved is not read until the new daemon adopts it.
 * Every loop is bounded in time (the worker's `maxDurationMs`) and in count.
 */
import { WebSocket } from 'ws';
import { max, quantile } from './stats.js';
import type { LoadConfig, WsLoadConfig, WsResult } from './types.js';

interface Answer {
  readonly seq: number;
  readonly pid: number;
}

/** One client: its current connection, whether that is the one it opened first, its message in flight. */
interface Client {
  readonly index: number;
  ws: WebSocket | null;
  original: boolean;
  /** The message in flight on `ws`: its seq, and who waits for its answer. */
  pending: { readonly seq: number; readonly done: (answer: Answer | null) => void } | null;
  reconnects: number;
  timer: NodeJS.Timeout | null;
}

/** How long a stopping worker waits for the messages still in flight, at most. */
const SETTLE_MS = 2_000;

export async function wsClients(config: LoadConfig, stopped: Promise<void>, ready: () => Promise<void>): Promise<WsResult> {
  const o: WsLoadConfig = config.ws ?? { clients: 0, messagesPerSecond: 0, reconnectMinMs: 500, reconnectMaxMs: 1_500, reconnectsMax: 0, openConcurrency: 1 };
  const url = (i: number): string => `ws://127.0.0.1:${config.port}/?name=c${i}`;
  let seq = 0;
  /** The load stopped (no new message). */
  let stopping = false;
  /** No new reconnect either: the last check runs. */
  let final = false;
  /** Reconnects scheduled or under way. */
  let reconnecting = 0;
  const closeCodes: Record<string, number> = {};
  const counts = { closedByServer: 0, reconnects: 0, reconnectFailures: 0, sent: 0, answered: 0, late: 0, unanswered: 0 };
  const roundTrips: number[] = [];
  const clients: Client[] = Array.from({ length: o.clients }, (_, index) => ({ index, ws: null, original: true, pending: null, reconnects: 0, timer: null }));

  /**
   * Sends `{seq}` on the client's connection; resolves with the answer, or null (closed first;
   * an opening or last message: no answer within the request timeout). `load`: a message of the
   * load (counted, and waited for past the timeout), not an opening or last one.
   */
  const message = (c: Client, load: boolean): Promise<Answer | null> => {
    const ws = c.ws;
    if (ws === null || ws.readyState !== WebSocket.OPEN || c.pending !== null) return Promise.resolve(null);
    return new Promise((resolve) => {
      const s = ++seq;
      const sentAt = Date.now();
      let late = false;
      const timer = setTimeout(() => {
        if (c.pending?.seq !== s) return;
        if (load) late = true;
        else done(null);
      }, config.requestTimeoutMs);
      const done = (answer: Answer | null): void => {
        clearTimeout(timer);
        c.pending = null;
        if (load && answer === null) counts.unanswered += 1;
        else if (load) {
          counts.answered += 1;
          if (late) counts.late += 1;
          roundTrips.push(Date.now() - sentAt);
        }
        resolve(answer);
      };
      c.pending = { seq: s, done };
      if (load) counts.sent += 1;
      ws.send(JSON.stringify({ seq: s }));
    });
  };

  /** Opens a connection for `c` and has one message answered on it; false when that fails. */
  const open = (c: Client): Promise<boolean> =>
    new Promise((resolve) => {
      const ws = new WebSocket(url(c.index), 'chat.v1', { handshakeTimeout: config.requestTimeoutMs, perMessageDeflate: false });
      // Established: open and answered once. Until then a close is the attempt's failure.
      let established = false;
      let settled = false;
      const settle = (ok: boolean): void => {
        if (settled) return;
        settled = true;
        established = ok;
        resolve(ok);
      };
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (isBinary || ws !== c.ws) return;
        let answer: Partial<Answer>;
        try {
          answer = JSON.parse(data.toString()) as Partial<Answer>;
        } catch {
          return;
        }
        if (c.pending !== null && answer.seq === c.pending.seq) c.pending.done({ seq: answer.seq, pid: Number(answer.pid) });
      });
      ws.on('error', () => undefined);
      ws.once('close', (code: number) => {
        if (ws !== c.ws || !established) {
          c.pending?.done(null);
          if (ws === c.ws) c.ws = null;
          settle(false);
          return;
        }
        c.pending?.done(null);
        c.ws = null;
        c.original = false;
        if (final) return;
        // Not closed by this worker: the server closed it, or it broke.
        counts.closedByServer += 1;
        closeCodes[String(code)] = (closeCodes[String(code)] ?? 0) + 1;
        reconnect(c);
      });
      ws.once('open', () => {
        c.ws = ws;
        void message(c, false).then((answer) => {
          settle(answer !== null);
        });
      });
      ws.once('unexpected-response', () => {
        ws.terminate();
      });
    });

  /** After a jittered delay, a new connection for `c` (bounded per client); a failed attempt tries again. */
  const reconnect = (c: Client): void => {
    if (final || c.reconnects >= o.reconnectsMax) return;
    c.reconnects += 1;
    reconnecting += 1;
    const delay = o.reconnectMinMs + Math.random() * Math.max(0, o.reconnectMaxMs - o.reconnectMinMs);
    c.timer = setTimeout(() => {
      c.timer = null;
      if (final) {
        reconnecting -= 1;
        return;
      }
      void open(c).then((ok) => {
        reconnecting -= 1;
        if (ok) counts.reconnects += 1;
        else {
          counts.reconnectFailures += 1;
          c.ws?.terminate();
          c.ws = null;
          reconnect(c);
        }
      });
    }, delay);
  };

  // Open every client, `openConcurrency` at a time, each answered once: only these are originals.
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < clients.length) {
      const c = clients[next++] as Client;
      if (!(await open(c))) {
        c.ws?.terminate();
        c.ws = null;
        c.original = false;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.openConcurrency, clients.length) }, lane));
  const opened = clients.filter((c) => c.ws !== null && c.original).length;
  const startedAt = Date.now();
  await ready();

  // The light message load: on each tick, the messages due since the start, round-robin over
  // open clients with none in flight; bounded by the stop and by a count.
  const maxMessages = Math.ceil((o.messagesPerSecond * config.maxDurationMs) / 1000);
  let turn = 0;
  const tick = (): void => {
    if (stopping || clients.length === 0) return;
    const due = Math.min(maxMessages, Math.floor(((Date.now() - startedAt) * o.messagesPerSecond) / 1000));
    let tries = 0;
    while (counts.sent < due && tries < clients.length) {
      const c = clients[turn++ % clients.length] as Client;
      tries += 1;
      if (c.ws !== null && c.ws.readyState === WebSocket.OPEN && c.pending === null) void message(c, true);
    }
  };
  const loop = o.messagesPerSecond > 0 ? setInterval(tick, 10) : null;
  await stopped;
  stopping = true;
  if (loop) clearInterval(loop);
  const endedAt = Date.now();
  // The reconnects under way finish (a client closed by the last handoff gets its chance), bounded.
  const reconnectBy = Date.now() + o.reconnectMaxMs + config.requestTimeoutMs;
  while (reconnecting > 0 && Date.now() < reconnectBy) await new Promise((resolve) => setTimeout(resolve, 20));
  final = true;
  for (const c of clients) if (c.timer) clearTimeout(c.timer);
  // The messages in flight: answered, or given up after SETTLE_MS (the request timeout counts them unanswered).
  const settleBy = Date.now() + SETTLE_MS;
  while (clients.some((c) => c.pending !== null) && Date.now() < settleBy) await new Promise((resolve) => setTimeout(resolve, 20));
  for (const c of clients) c.pending?.done(null);
  // One last message on every connection still open: kept (an original) or reconnected.
  const last: { c: Client; original: boolean; answer: Answer | null }[] = [];
  let i = 0;
  const check = async (): Promise<void> => {
    while (i < clients.length) {
      const c = clients[i++] as Client;
      if (c.ws === null || c.ws.readyState !== WebSocket.OPEN) continue;
      const original = c.original;
      last.push({ c, original, answer: await message(c, false) });
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.openConcurrency, clients.length) }, check));
  const answered = last.filter((l) => l.answer !== null);
  for (const c of clients) c.ws?.terminate();
  return {
    kind: 'ws',
    clients: o.clients,
    opened,
    kept: answered.filter((l) => l.original).length,
    closedByServer: counts.closedByServer,
    closeCodes,
    reconnects: counts.reconnects,
    reconnectFailures: counts.reconnectFailures,
    connectedAtEnd: answered.length,
    pidsAtEnd: new Set(answered.map((l) => l.answer?.pid)).size,
    // The load's messages alone (not the opening and last ones).
    messagesSent: counts.sent,
    messagesAnswered: counts.answered,
    messagesLate: counts.late,
    messagesUnanswered: counts.unanswered,
    roundTripMs: { p50: quantile(roundTrips, 0.5), p99: quantile(roundTrips, 0.99), max: max(roundTrips) },
    startedAt,
    endedAt,
  };
}
