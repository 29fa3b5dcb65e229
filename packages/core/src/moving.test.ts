import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, createServer } from 'node:http';
import { Agent as HttpsAgent, createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { HttpDrainer } from './http-drain.js';
import { movable } from './moving.js';

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve((server.address() as { port: number }).port);
    });
  });
}

/** A GET on `agent`'s connection (http or https): the Connection header of the answer. */
function get(send: typeof httpsRequest, port: number, agent: Agent | HttpsAgent): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    send({ host: '127.0.0.1', port, path: '/', agent, rejectUnauthorized: false }, (res) => {
      res.resume().on('end', () => {
        resolve(res.headers.connection);
      });
    })
      .on('error', reject)
      .end();
  });
}

describe('moving connections: what may move', () => {
  let dir = '';
  let tls: { key: Buffer; cert: Buffer };
  beforeAll(() => {
    // A self-signed certificate made by openssl, for a real TLS connection.
    dir = mkdtempSync(join(tmpdir(), 'handoff-tls-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-days', '1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    tls = { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('moves an idle plaintext keep-alive connection between requests, and answers without Connection: close while it moves', async () => {
    const server = createServer({ keepAlive: true }, (_req, res) => res.end('ok'));
    const drainer = new HttpDrainer(server);
    const port = await listen(server);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      await get(request, port, agent);
      const offered: Socket[] = [];
      const report = await drainer.drain({
        deadline: Date.now() + 5_000,
        graceMs: 4_000,
        move: (socket) => {
          if (!movable(socket)) return false;
          offered.push(socket);
          return true;
        },
      });
      // Moved (no longer the drainer's): the drain ended without waiting for the grace, nothing closed.
      expect(offered).toHaveLength(1);
      expect(report).toEqual({ openConnsRemaining: 0, acceptClosed: true });
      expect(offered[0]?.destroyed).toBe(false);
      // A rollback gives it back: the drainer counts it again.
      drainer.resume();
      expect(drainer.openConnections).toBe(1);
    } finally {
      agent.destroy();
      server.closeAllConnections();
      server.close();
    }
  });

  it('never moves a TLS connection: it drains as before (Connection: close, closed after the grace)', async () => {
    const server = createHttpsServer({ ...tls, keepAlive: true }, (_req, res) => res.end('ok'));
    const drainer = new HttpDrainer(server);
    const port = await listen(server);
    const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1 });
    let tlsSocket: Socket | null = null;
    server.on('secureConnection', (s: Socket) => {
      tlsSocket = s;
    });
    try {
      expect(await get(httpsRequest, port, agent)).toBe('keep-alive');
      expect(tlsSocket).not.toBeNull();
      expect(movable(tlsSocket as unknown as Socket)).toBe(false);
      const asked: Socket[] = [];
      const draining = drainer.drain({
        deadline: Date.now() + 10_000,
        graceMs: 300,
        move: (socket) => {
          asked.push(socket);
          return movable(socket);
        },
      });
      // A request during the drain on the TLS connection is told to close it.
      expect(await get(httpsRequest, port, agent)).toBe('close');
      const report = await draining;
      expect(report).toEqual({ openConnsRemaining: 0, acceptClosed: true });
      expect((tlsSocket as unknown as Socket).destroyed).toBe(true);
      // Whatever the drainer asked about, nothing encrypted could move.
      expect(asked.filter((s) => movable(s))).toEqual([]);
    } finally {
      agent.destroy();
      server.closeAllConnections();
      server.close();
    }
  });
});
