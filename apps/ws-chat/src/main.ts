#!/usr/bin/env node
/**
 * An example WebSocket daemon built on the `ws` package whose clients never see a handoff:
 * at each handoff every idle connection moves to the new version with its session (the
 * subprotocol negotiated and the application's own data), and the new version answers on it
 * (PROTOCOL.md section 6, "Moving connections").
 *
 * Protocol: connect to `/?name=<name>` (subprotocol `chat.v1` if offered); each text message
 * is answered with a JSON object `{ seq, pid, build, name, count, protocol }` where `seq` is
 * the `seq` of the message (a JSON object) and `count` the messages this session sent so far,
 * across versions. `{"pause": ms}` stops reading the client for `ms` (a slow consumer: what
 * it sends meanwhile waits, read and not consumed, and moves with the connection as such).
 * `GET /health` answers `{ pid, build, clients, buffered }` (`buffered`: bytes read from
 * clients and not consumed yet).
 *
 * Environment: `WS_BUILD_ID` (default `dev`); without a supervisor it listens on
 * `WS_LISTEN` (default 127.0.0.1:8090).
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import type { RawData } from 'ws';
import { MovableConnections, runDaemon } from '@handoff/core';
import type { AdoptedConnection } from '@handoff/core';

const build = process.env.WS_BUILD_ID ?? 'dev';
const [host, port] = (process.env.WS_LISTEN ?? '127.0.0.1:8090').split(':');

/** What a client's session keeps; handed to the next version with its connection. */
interface Session {
  readonly name: string;
  count: number;
}

/** What moves with a connection: the subprotocol `ws` negotiated, and the session. */
interface MovedState {
  readonly protocol: string;
  readonly session: Session;
}

/** The parts of a `ws` WebSocket that say whether it is between frames (ws 8 internals, read only). */
interface WsInternals {
  _receiver?: { _state: number; _bufferedBytes: number; _fragments: unknown[]; writableLength: number };
  _sender?: { _queue: unknown[]; _state: number };
  _socket?: Socket;
}

/**
 * True between frames: nothing half read (the receiver waits for a frame's first byte, holds
 * no bytes and no fragments of a message) and nothing queued to send. Bytes a paused client
 * sent are read and not consumed: they move with it.
 */
function betweenFrames(ws: WebSocket): boolean {
  const w = ws as unknown as WsInternals;
  const r = w._receiver;
  const s = w._sender;
  if (ws.readyState !== WebSocket.OPEN || !r || !s || !w._socket) return false;
  return r._state === 0 && r._bufferedBytes === 0 && r._fragments.length === 0 && r.writableLength === 0 && s._queue.length === 0 && s._state === 0 && ws.bufferedAmount === 0;
}

const wss = new WebSocketServer({
  noServer: true,
  handleProtocols: (protocols) => (protocols.has('chat.v1') ? 'chat.v1' : false),
});
const movable = new MovableConnections({ adopt: (connection) => { adopt(connection); } });

/** Serves `ws` for `session`, and declares its connection movable. */
function serve(ws: WebSocket, session: Session): void {
  ws.on('message', (data: RawData, isBinary: boolean) => {
    if (isBinary) return;
    let message: { seq?: unknown; pause?: unknown } = {};
    try {
      // A text message: one Buffer, or the fragments of one.
      message = JSON.parse((Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)).toString()) as typeof message;
    } catch {
      // not JSON: answered without a seq
    }
    if (typeof message.pause === 'number') {
      ws.pause();
      setTimeout(() => { ws.resume(); }, Math.min(message.pause, 60_000)).unref();
    }
    const seq = message.seq ?? null;
    session.count++;
    ws.send(JSON.stringify({ seq, pid: process.pid, build, name: session.name, count: session.count, protocol: ws.protocol }));
  });
  ws.on('error', () => undefined);
  const socket = (ws as unknown as WsInternals)._socket;
  if (!socket) return;
  movable.add(socket, {
    kind: 'ws',
    idle: () => betweenFrames(ws),
    state: () => Buffer.from(JSON.stringify({ protocol: ws.protocol, session } satisfies MovedState)),
  });
}

/** A connection the previous version handed over: a WebSocket again, with its subprotocol and session. */
function adopt(connection: AdoptedConnection): void {
  if (connection.kind !== 'ws' || connection.state === null) {
    connection.socket.destroy();
    return;
  }
  const moved = JSON.parse(Buffer.from(connection.state).toString()) as MovedState;
  // A server-side WebSocket (`ws` makes one so for its own upgrades), given the moved socket.
  const ws = new (WebSocket as unknown as new (address: null, protocols: undefined, options: object) => WebSocket)(null, undefined, {});
  const internals = ws as unknown as { _protocol: string; setSocket(socket: Socket, head: Buffer, options: object): void };
  internals._protocol = moved.protocol;
  internals.setSocket(connection.socket, connection.leftover, { maxPayload: 100 * 1024 * 1024, skipUTF8Validation: false, allowSynchronousEvents: true });
  wss.clients.add(ws);
  ws.once('close', () => wss.clients.delete(ws));
  serve(ws, moved.session);
  // Adopted sockets come paused: read now, the unread bytes first.
  connection.socket.resume();
}

/** Draining without moving: new clients are closed as they come. */
let restarting = false;

const stop = new AbortController();
process.once('SIGTERM', () => {
  stop.abort();
});

const exit = await runDaemon({
  buildId: `ws-chat-${build}`,
  listeners: { http: { host: host ?? '127.0.0.1', port: Number(port ?? 8090) } },
  handler: () => (req, res) => {
    if (req.url === '/health') {
      res.setHeader('content-type', 'application/json');
      const buffered = [...wss.clients].reduce((n, ws) => n + ((ws as unknown as WsInternals)._socket?.readableLength ?? 0), 0);
      res.end(JSON.stringify({ pid: process.pid, build, clients: wss.clients.size, buffered }));
      return;
    }
    res.statusCode = 426;
    res.end('connect with a WebSocket client\n');
  },
  upgrade: () => (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const name = new URL(req.url ?? '/', 'http://x').searchParams.get('name') ?? 'anonymous';
    wss.handleUpgrade(req, socket, head, (ws) => {
      // Stopping without moving its connections: a client that comes now is told to go elsewhere at once.
      if (restarting) ws.close(1012, 'service restart');
      else serve(ws, { name: name.slice(0, 64), count: 0 });
    });
  },
  connections: movable,
  onDrainStart: ({ movingConnections }) => {
    // Connections that cannot move (no supervisor to pass them, or a stop): say so properly.
    if (movingConnections) return;
    restarting = true;
    for (const ws of wss.clients) ws.close(1012, 'service restart');
  },
  onServing: (info) => {
    // Serving (again, after a rollback): new clients are served.
    restarting = false;
    console.log(JSON.stringify({ event: 'serving', pid: process.pid, build, ...info }));
  },
  stopSignal: stop.signal,
});
if (exit.code === 0) console.log(JSON.stringify({ event: 'exit', pid: process.pid, ...exit }));
else console.error(`handoff-ws-chat: ${exit.reason}`);
process.exit(exit.code);
