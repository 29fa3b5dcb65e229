import { Agent, createServer, request } from 'node:http';
import type { Server } from 'node:http';
import { describe, expect, it } from 'vitest';
import { HttpDrainer } from './http-drain.js';

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve((server.address() as { port: number }).port);
    });
  });
}

/** One GET: the Connection header and the body. `agent: false` opens a fresh connection. */
function get(port: number, agent: Agent | false): Promise<{ connection: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        resolve({ connection: res.headers.connection, body });
      });
    })
      .on('error', reject)
      .end();
  });
}

describe('HttpDrainer', () => {
  it('reports and destroys the connections still open at the hard deadline', async () => {
    const server = createServer({ keepAlive: true }, () => {
      // never answers: a request that outlives the drain
    });
    const drainer = new HttpDrainer(server);
    const port = await listen(server);
    // Registered after the drainer's own listener: when it fires, the drainer counts the connection.
    const connected = new Promise((resolve) => server.once('connection', resolve));
    const failed = new Promise<string>((resolve) => {
      request({ host: '127.0.0.1', port, path: '/' })
        .on('error', (e: NodeJS.ErrnoException) => {
          resolve(e.code ?? e.message);
        })
        .end();
    });
    await connected;
    expect(drainer.openConnections).toBe(1);
    const report = await drainer.drain({ deadline: Date.now() + 300, graceMs: 50 });
    expect(report).toEqual({ openConnsRemaining: 1, acceptClosed: true });
    expect(drainer.openConnections).toBe(0);
    expect(await failed).toBe('ECONNRESET');
    expect(server.listening).toBe(false);
  });

  it('answers the next request of a keep-alive client with Connection: close during the drain, and ends with none open', async () => {
    const server = createServer({ keepAlive: true }, (_req, res) => res.end('ok'));
    const drainer = new HttpDrainer(server);
    const port = await listen(server);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      expect(await get(port, agent)).toEqual({ connection: 'keep-alive', body: 'ok' });
      const drained = drainer.drain({ deadline: Date.now() + 5_000, graceMs: 1_000 });
      // The same connection, reused during the drain: answered, then closed.
      expect(await get(port, agent)).toEqual({ connection: 'close', body: 'ok' });
      expect(await drained).toEqual({ openConnsRemaining: 0, acceptClosed: true });
    } finally {
      agent.destroy();
    }
  });

  it('keeps serving new connections while an idle keep-alive connection waits out the grace, then stops accepting', async () => {
    const server = createServer({ keepAlive: true }, (_req, res) => res.end('ok'));
    const drainer = new HttpDrainer(server);
    const port = await listen(server);
    const idle = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      await get(port, idle); // one keep-alive connection, now idle
      const started = Date.now();
      const drained = drainer.drain({ deadline: Date.now() + 10_000, graceMs: 1_000 });
      // A new client during the grace is served (before: refused, nobody accepting for 1 s).
      expect(await get(port, false)).toEqual({ connection: 'close', body: 'ok' });
      expect(server.listening).toBe(true);
      // At the grace's end the idle connection is closed and accepting stops.
      expect(await drained).toEqual({ openConnsRemaining: 0, acceptClosed: true });
      expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
      expect(server.listening).toBe(false);
      await expect(get(port, false)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    } finally {
      idle.destroy();
    }
  });

  it('stops accepting as soon as the connections open at the start have closed, without waiting for the grace', async () => {
    const server = createServer({ keepAlive: true }, (_req, res) => res.end('ok'));
    const drainer = new HttpDrainer(server);
    await listen(server);
    const started = Date.now();
    expect(await drainer.drain({ deadline: Date.now() + 10_000, graceMs: 5_000 })).toEqual({ openConnsRemaining: 0, acceptClosed: true });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(server.listening).toBe(false);
  });
});
