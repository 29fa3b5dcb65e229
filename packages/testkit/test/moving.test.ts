/**
 * Moving idle connections to the successor (PROTOCOL.md section 6, "Moving connections"),
 * through the real supervisor binary: WebSocket clients of the example ws daemon (on the `ws`
 * package, clients too) and keep-alive HTTP clients of the kv daemon stay connected through
 * handoffs, and are served by the newest daemon after each one.
 */
import { Agent, request } from 'node:http';
import type { Socket } from 'node:net';
import { describe, expect, it, onTestFailed } from 'vitest';
import { WebSocket } from 'ws';
import { LoadDriver, checkPromises, startCluster } from '../src/index.js';
import type { Cluster } from '../src/index.js';
import { kv } from './kv.js';
import { wsChat } from './ws-chat.js';

// HANDOFF_MOVING_TESTS=basic (CI's second pass, on Node 24): fewer clients and handoffs, one crash case.
const BASIC = process.env.HANDOFF_MOVING_TESTS === 'basic';
const WS_CLIENTS = BASIC ? 200 : 1_000;
const WS_HANDOFFS = BASIC ? 3 : 10;
const KEEP_ALIVE_HANDOFFS = BASIC ? 5 : 20;

function printOnFailure(cluster: Cluster): void {
  onTestFailed(() => {
    console.error(`--- supervisor and daemon output (${cluster.dir}) ---\n${cluster.output().slice(-20_000)}`);
  });
}

/** A WebSocket client of the example daemon that checks every answer: in order, none lost, its session continued. */
class ChatClient {
  readonly ws: WebSocket;
  sent = 0;
  received = 0;
  /** Answers to messages without a seq (a pause). */
  other = 0;
  lastPid = 0;
  closed: string | null = null;
  readonly problems: string[] = [];
  readonly opened: Promise<void>;

  constructor(port: number, readonly name: string) {
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/?name=${name}`, ['chat.v1']);
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => { resolve(); });
      this.ws.once('error', reject);
    });
    this.ws.on('message', (data) => {
      const text = (Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)).toString();
      const answer = JSON.parse(text) as { seq: number | null; pid: number; name: string; count: number; protocol: string };
      if (answer.seq === null) {
        this.other++;
        return;
      }
      this.received++;
      if (answer.seq !== this.received) this.problems.push(`answer ${answer.seq} where ${this.received} was due (lost or reordered)`);
      // The session moved with the connection: its count goes on across versions.
      if (answer.count !== answer.seq + this.other || answer.name !== this.name || answer.protocol !== 'chat.v1') this.problems.push(`session not continued: ${text}`);
      this.lastPid = answer.pid;
    });
    this.ws.on('close', (code, reason) => {
      this.closed = `${code} ${String(reason)}`;
    });
    this.ws.on('error', (error) => {
      this.problems.push(`error: ${error.message}`);
    });
  }

  /** Sends the next message; `padding` bytes make it longer. */
  send(padding = 0): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify({ seq: ++this.sent, ...(padding > 0 ? { padding: 'x'.repeat(padding) } : {}) }));
  }
}

describe('moving WebSocket connections', () => {
  it(`keeps ${WS_CLIENTS} WebSocket clients connected through ${WS_HANDOFFS} handoffs under message load: none closed, nothing lost or reordered, each served by the newest daemon`, async () => {
    await using cluster = await startCluster({ daemon: wsChat(), stateless: true });
    printOnFailure(cluster);
    const clients = Array.from({ length: WS_CLIENTS }, (_, i) => new ChatClient(cluster.port, `c${i}`));
    await Promise.all(clients.map((c) => c.opened));
    // Message load: every 10 ms, 10 clients each send one (1,000 messages a second; one a second per client with 1,000 clients).
    let next = 0;
    const load = setInterval(() => {
      for (let k = 0; k < 10; k++) clients[next++ % clients.length]?.send();
    }, 10);
    try {
      for (let i = 0; i < WS_HANDOFFS; i++) {
        const result = await cluster.handoff({ daemon: { env: { WS_BUILD_ID: `v${i + 2}` } } });
        expect(result, `handoff ${i + 1}`).toMatchObject({ committed: true, outcome: 'committed', abortReason: null });
        expect(result.drained?.connsOffered, `handoff ${i + 1}: connections offered`).toBeGreaterThanOrEqual(WS_CLIENTS);
        expect(result.drained?.openConnsRemaining).toBe(0);
        const pid = result.incumbentPid;
        // Each client is answered by the new daemon (the load reaches every one within about a second).
        await cluster.waitFor(`every client answered by the new daemon ${String(pid)} after handoff ${i + 1}`, () => clients.every((c) => c.lastPid === pid), 30_000);
      }
    } finally {
      clearInterval(load);
    }
    await cluster.waitFor('every message answered', () => clients.every((c) => c.received === c.sent), 30_000);
    const closed = clients.filter((c) => c.closed !== null);
    const problems = clients.flatMap((c) => c.problems.map((p) => `${c.name}: ${p}`));
    const sent = clients.reduce((n, c) => n + c.sent, 0);
    console.log(`${WS_CLIENTS} WebSocket clients through ${WS_HANDOFFS} handoffs: ${sent} messages, all answered in order; ${closed.length} closed; ${problems.length} problems`);
    expect(closed.map((c) => `${c.name}: ${String(c.closed)}`)).toEqual([]);
    expect(problems.slice(0, 20)).toEqual([]);
    expect(sent).toBeGreaterThan(WS_CLIENTS * WS_HANDOFFS);
    for (const c of clients) c.ws.terminate();
  });

  it('moves a connection with the bytes the incumbent read and did not consume: the new daemon answers them first, then the rest, in order', async () => {
    await using cluster = await startCluster({ daemon: wsChat(), stateless: true });
    printOnFailure(cluster);
    const client = new ChatClient(cluster.port, 'slow');
    await client.opened;
    const before = await cluster.health();
    // The daemon stops reading this client for a minute; what it sends now is read into the
    // daemon and left unconsumed — past the stream's high-water mark (16 KiB), the rest waits
    // in the kernel.
    client.ws.send(JSON.stringify({ pause: 60_000 }));
    await cluster.waitFor('the pause to be answered', () => client.other === 1);
    for (let k = 0; k < 30; k++) client.send(1_000);
    await cluster.waitFor('the messages to be buffered, unconsumed, in the incumbent', async () => ((await cluster.health()) as { buffered?: number } | null)?.buffered ?? 0);
    expect(client.received).toBe(0);
    const handoff = cluster.handoff({ daemon: { env: { WS_BUILD_ID: 'v2' } } });
    // And more while it moves: none may be read by the old daemon once it offered the connection.
    for (let k = 0; k < 5; k++) client.send();
    const result = await handoff;
    expect(result).toMatchObject({ committed: true });
    expect(result.drained?.connsOffered).toBe(1);
    await cluster.waitFor('the 35 answers', () => client.received === 35);
    expect(client.problems).toEqual([]);
    expect(client.lastPid).toBe(result.incumbentPid);
    expect(client.lastPid).not.toBe(before?.pid);
    expect(client.closed).toBeNull();
    client.ws.terminate();
  });
});

/** A keep-alive HTTP client on one connection, looping GETs: it counts its answers, its errors and the connections it needed. */
class KeepAliveClient {
  readonly agent = new Agent({ keepAlive: true, maxSockets: 1 });
  readonly sockets = new Set<Socket>();
  serverClosed = 0;
  ok = 0;
  readonly errors: string[] = [];
  lastPid = 0;
  #running = true;
  readonly done: Promise<void>;

  constructor(readonly port: number) {
    this.done = this.#loop();
  }

  async #loop(): Promise<void> {
    while (this.#running) {
      await new Promise<void>((resolve) => {
        const req = request({ host: '127.0.0.1', port: this.port, path: '/health', agent: this.agent, timeout: 20_000 }, (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
            if (res.statusCode === 200) {
              this.ok++;
              this.lastPid = (JSON.parse(body) as { pid: number }).pid;
            } else this.errors.push(`status ${String(res.statusCode)}`);
            resolve();
          });
        });
        req.on('socket', (socket: Socket) => {
          if (this.sockets.has(socket)) return;
          this.sockets.add(socket);
          socket.on('end', () => {
            if (this.#running) this.serverClosed++;
          });
        });
        req.on('timeout', () => req.destroy(new Error('no answer within 20 s (hung)')));
        req.on('error', (error: NodeJS.ErrnoException) => {
          this.errors.push(error.code ?? error.message);
          resolve();
        });
        req.end();
      });
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.done;
    this.agent.destroy();
  }
}

describe('moving keep-alive HTTP connections', () => {
  it(`keeps keep-alive clients on their connections through ${KEEP_ALIVE_HANDOFFS} handoffs of the kv daemon: none closed by the server, no error, and no handoff waits out the drain grace`, async () => {
    // A drain grace long enough to see: a handoff that waited for idle connections to close would take it.
    await using cluster = await startCluster({ daemon: kv(), timeouts: { drainGraceMs: 8_000, drainMs: 20_000, totalMs: 60_000 } });
    printOnFailure(cluster);
    const clients = Array.from({ length: 20 }, () => new KeepAliveClient(cluster.port));
    await cluster.waitFor('every client answered', () => clients.every((c) => c.ok > 0));
    for (let i = 0; i < KEEP_ALIVE_HANDOFFS; i++) {
      const result = await cluster.handoff({ daemon: { env: { KV_BUILD_ID: `v${i + 2}` } } });
      expect(result, `handoff ${i + 1}`).toMatchObject({ committed: true, outcome: 'committed' });
      expect(result.drained, `handoff ${i + 1}`).toMatchObject({ openConnsRemaining: 0 });
      expect(result.drained?.connsOffered, `handoff ${i + 1}`).toBeGreaterThanOrEqual(20);
      // Not the grace: every connection moved as soon as it was idle.
      expect(result.timings.phases.preparing ?? 0, `handoff ${i + 1}: the drain`).toBeLessThan(8_000);
      const pid = result.incumbentPid;
      await cluster.waitFor(`every client answered by ${String(pid)}`, () => clients.every((c) => c.lastPid === pid), 20_000);
    }
    await Promise.all(clients.map((c) => c.stop()));
    const total = clients.reduce((n, c) => n + c.ok, 0);
    console.log(`20 keep-alive clients through ${KEEP_ALIVE_HANDOFFS} handoffs: ${total} answers on ${clients.reduce((n, c) => n + c.sockets.size, 0)} connections`);
    expect(clients.flatMap((c) => c.errors)).toEqual([]);
    expect(clients.map((c) => c.serverClosed)).toEqual(clients.map(() => 0));
    // One connection each, from start to end.
    expect(clients.map((c) => c.sockets.size)).toEqual(clients.map(() => 1));
  });
});

/** One GET on `agent`: its status, the pid that answered, and whether it went on a connection already open. */
function getOn(port: number, agent: Agent): Promise<{ status: number; pid: number; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/health', agent, timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        resolve({ status: res.statusCode ?? 0, pid: (JSON.parse(body) as { pid: number }).pid, reused: req.reusedSocket });
      });
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 20 s (hung)')));
    req.on('error', reject);
    req.end();
  });
}

describe('idle keep-alive connections, moved again and again', () => {
  it('moves connections that stay idle through several handoffs: each is offered every time, and answers on the same connection at the end', async () => {
    await using cluster = await startCluster({ daemon: kv(), timeouts: { drainGraceMs: 8_000, drainMs: 20_000, totalMs: 60_000 } });
    printOnFailure(cluster);
    const agents = Array.from({ length: 30 }, () => new Agent({ keepAlive: true, maxSockets: 1 }));
    try {
      for (const agent of agents) expect(await getOn(cluster.port, agent)).toMatchObject({ status: 200, reused: false });
      for (let i = 0; i < 3; i++) {
        // Nothing is sent on them: adopted by the last daemon and never used there, they are idle all the same.
        const result = await cluster.handoff({ daemon: { env: { KV_BUILD_ID: `v${i + 2}` } } });
        expect(result, `handoff ${i + 1}`).toMatchObject({ committed: true, outcome: 'committed' });
        expect(result.drained, `handoff ${i + 1}`).toMatchObject({ openConnsRemaining: 0, connsOffered: 30 });
        expect(result.timings.phases.preparing ?? 0, `handoff ${i + 1}: the drain`).toBeLessThan(8_000);
      }
      const pid = (await cluster.health())?.pid;
      for (const agent of agents) expect(await getOn(cluster.port, agent)).toEqual({ status: 200, pid, reused: true });
    } finally {
      for (const agent of agents) agent.destroy();
    }
  });
});

describe('idle WebSocket connections, moved again and again', () => {
  it('moves WebSocket clients that send nothing through several handoffs, each as a WebSocket, and they answer at the end', async () => {
    await using cluster = await startCluster({ daemon: wsChat(), stateless: true });
    printOnFailure(cluster);
    const clients = Array.from({ length: 20 }, (_, i) => new ChatClient(cluster.port, `idle${i}`));
    await Promise.all(clients.map((c) => c.opened));
    for (let i = 0; i < 3; i++) {
      const result = await cluster.handoff({ daemon: { env: { WS_BUILD_ID: `v${i + 2}` } } });
      expect(result, `handoff ${i + 1}`).toMatchObject({ committed: true });
      // Each once: an adopted WebSocket that read nothing since is never taken for an idle HTTP connection.
      expect(result.drained?.connsOffered, `handoff ${i + 1}`).toBe(20);
    }
    for (const c of clients) c.send();
    await cluster.waitFor('every idle client answered', () => clients.every((c) => c.received === 1));
    const pid = (await cluster.health())?.pid;
    expect(clients.map((c) => c.lastPid)).toEqual(clients.map(() => pid));
    expect(clients.flatMap((c) => c.problems)).toEqual([]);
    expect(clients.filter((c) => c.closed !== null)).toEqual([]);
    for (const c of clients) c.ws.terminate();
  });
});

describe('a crash during the transfer', () => {
  // Each: where the process dies, and who it is. Every connection then stays with a daemon that
  // serves (its requests answered) or is closed (counted): never left open and unanswered.
  const cases: readonly { readonly point: string; readonly who: string }[] = [
    { point: 'incumbent:offered-connections', who: 'the incumbent, right after it offered its connections (the successor holds the only copies)' },
    { point: 'supervisor:sent-ConnOffer-to-successor', who: 'the supervisor, as it forwards them' },
    { point: 'successor:received-ConnOffer', who: 'the successor, as it receives them (the incumbent resumes them)' },
    { point: 'successor:committed', who: 'the successor, right after Commit' },
  ];
  for (const { point, who } of BASIC ? cases.slice(0, 1) : cases) {
    it(`kills ${who}: every connection is served or closed, none hangs; the usual promises hold`, async () => {
      await using cluster = await startCluster({ daemon: kv() });
      printOnFailure(cluster);
      const clients = Array.from({ length: 10 }, () => new KeepAliveClient(cluster.port));
      const load = new LoadDriver({ port: cluster.port, readers: 0, writers: 2, probeEveryMs: 20 }).start();
      await cluster.waitFor('every client answered', () => clients.every((c) => c.ok > 0));
      await load.waitForProgress(20);
      cluster.arm(point);
      await cluster.handoffReply({ daemon: { env: { KV_BUILD_ID: 'v2' } } });
      await cluster.waitFor(`the crash point ${point} to fire`, () => cluster.fired());
      const problems = await checkPromises(cluster, load, { allowResets: true, convergeMs: 30_000 });
      // Every client is answered again, by the daemon that serves (on its old connection, or a new one if it was closed).
      const counts = clients.map((c) => c.ok);
      await cluster.waitFor('every client answered after the crash', () => clients.every((c, i) => c.ok > (counts[i] ?? 0)), 30_000);
      await Promise.all(clients.map((c) => c.stop()));
      const hung = clients.flatMap((c) => c.errors).filter((e) => e.includes('hung'));
      const closed = clients.reduce((n, c) => n + c.serverClosed, 0);
      console.log(`${point}: ${closed} of ${clients.length} connections closed, the others served on; errors ${JSON.stringify(clients.flatMap((c) => c.errors))}`);
      expect(problems).toEqual([]);
      expect(hung).toEqual([]);
    });
  }

  it('holds the seal while the successor has not taken every descriptor: one stopped mid-transfer makes the handoff roll back, never Begin, and every connection stays with the incumbent', async () => {
    // Node keeps the handles it has not yet written in the sender's memory, one written per
    // acknowledgement. Were the supervisor to seal and send Begin with some still there, they
    // would die with it if it were killed then (and the incumbent, its lock gone, could not
    // take them back). The successor is stopped at its first ConnOffer: most descriptors wait
    // in the supervisor when the incumbent has drained, and never get written. A liveness
    // timeout of 3 s leaves the incumbent time to offer every connection before the stopped
    // successor is judged silent.
    await using cluster = await startCluster({ daemon: kv(), timeouts: { livenessMs: 3_000 } });
    printOnFailure(cluster);
    const agents = Array.from({ length: 50 }, () => new Agent({ keepAlive: true, maxSockets: 1 }));
    try {
      for (const agent of agents) expect(await getOn(cluster.port, agent)).toMatchObject({ status: 200, reused: false });
      const incumbent = (await cluster.health())?.pid;
      cluster.arm('successor:received-ConnOffer', 'SIGSTOP');
      const before = cluster.events.length;
      const reply = cluster.handoffReply({ daemon: { env: { KV_BUILD_ID: 'v2' } } });
      const successor = await cluster.waitFor('the successor to stop at its first ConnOffer', () => cluster.fired());
      // From now on a Begin kills the supervisor: it must never be sent.
      cluster.arm('supervisor:sent-Begin-to-successor');
      const r = await reply;
      expect(cluster.fired(), 'the supervisor sent Begin while descriptors still waited in its memory').toBeNull();
      // The held Drained never reached the handoff machine: no seal was asked for.
      expect(r).toMatchObject({ ok: true, value: { committed: false, outcome: 'rolledBack', abortReason: { code: 'HANDOFF_SUCCESSOR_SILENT' }, drained: null } });
      expect(cluster.events.slice(before).find((e) => e.msg === 'descriptors-pending')).toMatchObject({ successorPid: successor, pending: expect.any(Number) as unknown });
      const answers = await Promise.all(agents.map((agent) => getOn(cluster.port, agent).catch((e: unknown) => ({ error: (e as Error).message }))));
      const lost = answers.filter((a) => !('status' in a) || a.status !== 200 || !a.reused || a.pid !== incumbent);
      expect(lost.length, `connections not served on by the incumbent (pid ${String(incumbent)}): ${JSON.stringify(lost.slice(0, 5))}`).toBe(0);
    } finally {
      for (const agent of agents) agent.destroy();
    }
  });
});
