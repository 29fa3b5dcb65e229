/**
 * Inherited listeners with reserve copies, and the http drain, in real child processes.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

/** Starts node with `args` the way a supervisor (or systemd) starts a daemon: `LISTEN_PID` is its own pid. */
function spawnActivated(args: string[], options: SpawnOptions): ChildProcess {
  return spawn('/bin/sh', ['-c', 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"', process.execPath, ...args], options);
}

const require = createRequire(import.meta.url);
const net = require('node:net') as { _createServerHandle(a: string, p: number, t: number, fd: undefined, f: number): { fd: number; close(): void; getsockname(o: object): void } };

/** A child that inherits one listener twice (serve + reserve), serves, drains, and re-listens. */
const CHILD = `
const { detectRole, HttpDrainer } = await import(process.env.CORE);
const http = await import('node:http');
const role = detectRole();
const listener = role.listeners.require('http');
const serve = async () => {
  const server = http.createServer({ keepAlive: true }, (req, res) => res.end(String(process.pid)));
  const drainer = new HttpDrainer(server);
  await listener.listen(server, 511);
  return drainer;
};
let drainer = await serve();
process.on('message', async (m) => {
  if (m === 'drain') { const r = await drainer.drain({ deadline: Date.now() + 5000, graceMs: 100 }); process.send({ drained: r, copiesLeft: listener.copiesLeft }); }
  if (m === 'relisten') { try { drainer = await serve(); process.send({ relistened: true, copiesLeft: listener.copiesLeft }); } catch (e) { process.send({ error: e.code }); } }
});
process.send({ ready: listener.copiesLeft });
`;

function next(child: ReturnType<typeof spawn>): Promise<Record<string, unknown>> {
  return new Promise((resolve) => child.once('message', (m) => { resolve(m as Record<string, unknown>); }));
}

const cases: [string, (dir: string) => { address: string; port?: number; path?: string; family: number }][] = [
  ['tcp4', () => ({ address: '127.0.0.1', family: 4 })],
  ['tcp6', () => ({ address: '::1', family: 6 })],
  ['unix', (dir) => ({ address: join(dir, 'http.sock'), path: join(dir, 'http.sock'), family: -1 })],
];

describe('inherited listeners', () => {
  for (const [name, spec] of cases) {
    it(`${name}: serves, drains with zero errors under keep-alive load, queues while closed, and accepts again on a reserve copy — and on a copy it makes once none is left`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'handoff-listen-'));
      const s = spec(dir);
      const handle = s.family === -1 ? net._createServerHandle(s.address, -1, -1, undefined, 0) : net._createServerHandle(s.address, 0, s.family, undefined, 0);
      const out: { port?: number } = {};
      if (s.family !== -1) handle.getsockname(out);
      const target = s.path ? { socketPath: s.path } : { host: s.address, port: out.port ?? 0 };
      const child = spawnActivated(['--input-type=module', '-e', CHILD], {
        stdio: ['ignore', 'inherit', 'inherit', handle.fd, handle.fd, 'ipc'],
        env: { ...process.env, LISTEN_FDS: '1', LISTEN_FDNAMES: 'http', HANDOFF_RESERVE_COPIES: '1', CORE: new URL('../dist/index.js', import.meta.url).href },
      });
      const agent = new Agent({ keepAlive: true, maxSockets: 4 });
      let errors = 0;
      let ok = 0;
      let running = true;
      const get = (): Promise<void> =>
        new Promise((resolve) => {
          request({ ...target, path: '/', agent }, (res) => {
            res.resume().on('end', () => {
              ok += 1;
              resolve();
            });
          })
            .on('error', () => {
              errors += 1;
              resolve();
            })
            .end();
        });
      try {
        expect(await next(child)).toEqual({ ready: 1 }); // one copy listening, one in reserve
        const loops = Array.from({ length: 4 }, async () => {
          while (running) await get();
        });
        while (ok < 50) await new Promise((r) => setTimeout(r, 5));
        child.send('drain');
        const drained = await next(child);
        expect(drained).toMatchObject({ drained: { openConnsRemaining: 0, acceptClosed: true }, copiesLeft: 1 });
        // Nobody accepts now: a new connection waits in the kernel's queue, it is not refused.
        const before = ok;
        const queued = new Promise<boolean>((resolve) => {
          const socket = createConnection(s.path ? { path: s.path } : { host: s.address, port: out.port ?? 0 }, () => {
            socket.end('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
          });
          socket.on('data', () => { resolve(true); });
          socket.on('error', () => { resolve(false); });
        });
        child.send('relisten');
        expect(await next(child)).toEqual({ relistened: true, copiesLeft: 0 });
        expect(await queued).toBe(true);
        while (ok < before + 50) await new Promise((r) => setTimeout(r, 5));
        running = false;
        await Promise.all(loops);
        expect(errors).toBe(0);
        // Every inherited copy used: the process made a new one, and accepts again after any number of aborts.
        for (let round = 0; round < 3; round++) {
          child.send('drain');
          expect(await next(child)).toMatchObject({ drained: { acceptClosed: true } });
          child.send('relisten');
          expect(await next(child)).toMatchObject({ relistened: true });
          expect(await get().then(() => errors)).toBe(0);
        }
      } finally {
        running = false;
        agent.destroy();
        child.kill('SIGKILL');
        handle.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

describe('backlog', () => {
  it('is honoured on an inherited fd (listen({ fd }, backlog), not listen({ fd, backlog }))', async () => {
    const handle = net._createServerHandle('127.0.0.1', 0, 4, undefined, 0);
    const out: { port?: number } = {};
    handle.getsockname(out);
    const child = spawnActivated(
      ['--input-type=module', '-e', `const { detectRole } = await import(process.env.CORE); const http = await import('node:http'); await detectRole().listeners.require('http').listen(http.createServer(), 77); process.send('listening'); setInterval(() => {}, 1000);`],
      { stdio: ['ignore', 'inherit', 'inherit', handle.fd, 'ipc'], env: { ...process.env, LISTEN_FDS: '1', LISTEN_FDNAMES: 'http', CORE: new URL('../dist/index.js', import.meta.url).href } },
    );
    try {
      await next(child);
      const { execFileSync } = await import('node:child_process');
      // ss shows a listening socket's backlog as its Send-Q.
      const line = execFileSync('ss', ['-ltnH', `sport = :${String(out.port)}`], { encoding: 'utf8' }).trim();
      expect(line.split(/\s+/).slice(0, 3)).toEqual(['LISTEN', '0', '77']);
    } finally {
      child.kill('SIGKILL');
      handle.close();
    }
  });
});
