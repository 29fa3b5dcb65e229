import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { spawnWithListenPid } from './processes.js';
import { bindListeners, listenersFromEnv, selfTestHeldListeners, startListening } from './listeners.js';

function tryConnect(options: { host: string; port: number } | { path: string }): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(options as never);
    socket.once('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      resolve(e.code ?? 'error');
    });
  });
}

describe('held listeners', () => {
  it('passes the start-up self-test of the internal API on this Node', () => {
    expect(() => {
      selfTestHeldListeners();
    }).not.toThrow();
  });

  it('binds TCP v4, TCP v6 and Unix sockets without accepting: connects are refused until a daemon listens', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'handoff-held-'));
    const held = bindListeners([
      { name: 'v4', host: '127.0.0.1', port: 0 },
      { name: 'v6', host: '::1', port: 0 },
      { name: 'unix', path: join(dir, 'http.sock'), mode: 0o660 },
    ]);
    try {
      expect(held.listeners.map((l) => l.name)).toEqual(['v4', 'v6', 'unix']);
      const [v4, v6, unix] = held.listeners;
      if (!v4 || !v6 || !unix) throw new Error('expected three listeners');
      expect(v4.address).toMatch(/^tcp:127\.0\.0\.1:\d+$/);
      expect(v6.address).toMatch(/^tcp:\[::1\]:\d+$/);
      expect(unix.address).toBe(`unix:${join(dir, 'http.sock')}`);
      expect(statSync(join(dir, 'http.sock')).mode & 0o777).toBe(0o660);
      // Bound, never listened: nothing accepts, nothing is stolen.
      expect(await tryConnect({ host: '127.0.0.1', port: Number(v4.address.split(':').pop()) })).toBe('ECONNREFUSED');
      // Once something listens on the held fd, the same socket accepts.
      const server = createServer((s) => s.end());
      await new Promise<void>((resolve) => server.listen({ fd: v4.fd }, resolve));
      expect(await tryConnect({ host: '127.0.0.1', port: Number(v4.address.split(':').pop()) })).toBe('connected');
      server.close();
    } finally {
      held.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('startListening puts held TCP v4, v6 and Unix sockets in LISTEN with nobody accepting: connects queue, and a later server takes them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'handoff-held-'));
    const path = join(dir, 'http.sock');
    const held = bindListeners([
      { name: 'v4', host: '127.0.0.1', port: 0 },
      { name: 'v6', host: '::1', port: 0, backlog: 64 },
      { name: 'unix', path },
    ]);
    try {
      const addresses = startListening(held.listeners);
      // TCP sockets are named by what they are bound to; a Unix socket opened from an fd keeps its given name.
      expect(addresses).toEqual(held.listeners.map((l) => l.address));
      const [v4, v6] = held.listeners.map((l) => Number(l.address.split(':').pop()));
      // Queued in the backlog (connect completes) although no process accepts.
      expect(await tryConnect({ host: '127.0.0.1', port: v4 ?? 0 })).toBe('connected');
      expect(await tryConnect({ host: '::1', port: v6 ?? 0 })).toBe('connected');
      expect(await tryConnect({ path })).toBe('connected');
      const first = held.listeners[0];
      if (!first) throw new Error('expected a listener');
      const accepted = new Promise<void>((resolve) => {
        const server = createServer((s) => {
          s.destroy();
          server.close();
          resolve();
        });
        server.listen({ fd: first.fd });
      });
      await accepted; // the connect queued above
    } finally {
      held.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names the listener and the cause when an address is taken or not an IP', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      expect(() => bindListeners([{ name: 'http', host: '127.0.0.1', port }])).toThrow(expect.objectContaining({ code: 'HANDOFF_LISTENER', message: expect.stringMatching(/listener "http": cannot bind 127\.0\.0\.1:\d+ \(EADDRINUSE\)/) }));
      expect(() => bindListeners([{ name: 'http', host: 'localhost', port: 0 }])).toThrow(/not an IP address/);
    } finally {
      taken.close();
    }
  });

  it('says what to do when an address is in use or not on this machine', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      expect(() => bindListeners([{ name: 'http', host: '127.0.0.1', port }])).toThrow(new RegExp(`^listener "http": cannot bind 127\\.0\\.0\\.1:${port} \\(EADDRINUSE\\): another process is using it; stop that process or choose another port$`));
    } finally {
      taken.close();
    }
    // 192.0.2.0/24 is TEST-NET-1: documentation only, never an address of this machine.
    expect(() => bindListeners([{ name: 'http', host: '192.0.2.1', port: 80 }])).toThrow(
      /^listener "http": cannot bind 192\.0\.2\.1:80 \(EADDRNOTAVAIL\): 192\.0\.2\.1 is not an address of this machine; use the address of a local interface/,
    );
    expect(() => bindListeners([{ name: 'http', host: '2001:db8::1', port: 8080 }])).toThrow(/cannot bind \[2001:db8::1\]:8080 \(EADDRNOTAVAIL\)/);
  });

  it('says that ports below 1024 need root or CAP_NET_BIND_SERVICE (EACCES), as a user without them', (context) => {
    if (Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8')) <= 80) context.skip();
    const probe = "import('@handoff/supervisor').then((m) => { try { m.bindListeners([{ name: 'http', host: '127.0.0.1', port: 80 }]); console.log('bound'); } catch (e) { console.log(e.message); } })";
    const cwd = fileURLToPath(new URL('..', import.meta.url));
    // As root, the probe runs as nobody; it skips when nobody cannot read this checkout.
    const argv = process.getuid?.() === 0 ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', probe] : [process.execPath, '-e', probe];
    const result = spawnSync(argv[0] ?? '', argv.slice(1), { cwd, encoding: 'utf8', timeout: 20_000 });
    if (!result.stdout.includes('cannot bind')) context.skip();
    expect(result.stdout.trim()).toBe('listener "http": cannot bind 127.0.0.1:80 (EACCES): permission denied: ports below 1024 need root or the CAP_NET_BIND_SERVICE capability; choose a port from 1024 up, or grant the capability');
  });

  it('takes the listeners systemd-style only when LISTEN_PID is this process, and consumes the variables', async () => {
    const other: NodeJS.ProcessEnv = { LISTEN_PID: String(process.pid + 1), LISTEN_FDS: '2', LISTEN_FDNAMES: 'http:admin' };
    expect(listenersFromEnv(other)).toEqual([]);
    expect(other).toEqual({});
    expect(() => listenersFromEnv({ LISTEN_PID: String(process.pid), LISTEN_FDS: 'x' })).toThrow(/LISTEN_FDS="x" is not a count/);
    // A real process started the way the supervisor starts daemons (and as systemd does): it
    // finds its listener at fd 3, under its name.
    const held = bindListeners([{ name: 'http', host: '127.0.0.1', port: 0 }]);
    try {
      const probe = "import('@handoff/supervisor').then((m) => console.log(JSON.stringify({ pid: process.pid, listeners: m.listenersFromEnv() })))";
      const child = spawnWithListenPid(
        { command: process.execPath, args: ['-e', probe], env: {}, cwd: fileURLToPath(new URL('..', import.meta.url)) },
        { env: { ...process.env, LISTEN_FDS: '1', LISTEN_FDNAMES: 'http' }, stdio: ['ignore', 'pipe', 'inherit', held.listeners[0]!.fd] },
      );
      let out = '';
      child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      await new Promise((resolve) => child.once('exit', resolve));
      expect(JSON.parse(out)).toEqual({ pid: child.pid, listeners: [{ name: 'http', fd: 3, address: 'fd:3' }] });
    } finally {
      held.close();
    }
  });
});
