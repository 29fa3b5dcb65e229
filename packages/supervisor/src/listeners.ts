/**
 * Listening sockets held without accepting on them (by the binary's keeper process, which
 * passes them to its supervisor child). A `net.Server` that listens in the holder would
 * steal connections; a socket bound by Node's internal
 * `net._createServerHandle` (the path the cluster module uses) and never listened is never
 * polled, and the first daemon's `listen({ fd })` puts it in LISTEN (docs/design.md, "Holding
 * listeners"). Alternatively the sockets come from a holder process or systemd via
 * `LISTEN_FDS`, so they outlive the supervisor.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync } from 'node:fs';
import * as net from 'node:net';
import { getSystemErrorName } from 'node:util';
import { listenFds } from '@handoff/core';
import { SupervisorError, SupervisorErrorCode } from './errors.js';

/** A listener to bind: TCP (IPv4 or IPv6) or a Unix socket path. */
export type ListenerSpec =
  | { readonly name: string; readonly host: string; readonly port: number; readonly backlog?: number }
  | { readonly name: string; readonly path: string; readonly mode?: number; readonly backlog?: number };

/** How a listener is named in status and logs: `tcp:host:port`, `tcp:[::1]:port` or `unix:/path`. */
export function listenerAddress(spec: ListenerSpec): string {
  if ('path' in spec) return `unix:${spec.path}`;
  return net.isIP(spec.host) === 6 ? `tcp:[${spec.host}]:${spec.port}` : `tcp:${spec.host}:${spec.port}`;
}

/** A socket the supervisor holds. */
export interface HeldListener {
  readonly name: string;
  readonly fd: number;
  /** `tcp:host:port`, `tcp:[::1]:port` or `unix:/path`. */
  readonly address: string;
  /** The accept backlog daemons listen with (default 511). */
  readonly backlog?: number;
}

interface RawHandle {
  readonly fd: number;
  getsockname?(out: Record<string, unknown>): number;
  close(): void;
}
type CreateServerHandle = (address: string | null, port: number, addressType: number, fd: number | undefined, flags: number) => RawHandle | number;

function createServerHandle(): CreateServerHandle {
  const fn = (net as unknown as { _createServerHandle?: CreateServerHandle })._createServerHandle;
  if (typeof fn !== 'function') {
    throw new SupervisorError(
      SupervisorErrorCode.InternalApi,
      `this Node.js (${process.version}) has no net._createServerHandle; bind the listeners in a holder or systemd and pass them with LISTEN_FDS instead`,
    );
  }
  return fn;
}

/**
 * Checks at start-up that the internal API still binds a socket without listening and
 * exposes its fd.
 * @throws SupervisorError HANDOFF_INTERNAL_API with what to do instead.
 */
export function selfTestHeldListeners(): void {
  const handle = createServerHandle()('127.0.0.1', 0, 4, undefined, 0);
  const ok = typeof handle === 'object' && Number.isInteger(handle.fd) && handle.fd >= 0;
  if (typeof handle === 'object') handle.close();
  if (!ok) {
    throw new SupervisorError(SupervisorErrorCode.InternalApi, `net._createServerHandle did not return a bound handle with an fd on Node ${process.version}; pass listeners with LISTEN_FDS instead`);
  }
}

/** Binds each listener without listening, and keeps its handle open. */
export function bindListeners(specs: readonly ListenerSpec[]): { readonly listeners: HeldListener[]; close(): void } {
  const create = createServerHandle();
  const handles: RawHandle[] = [];
  const listeners: HeldListener[] = [];
  try {
    for (const spec of specs) {
      if ('path' in spec) {
        const handle = create(spec.path, -1, -1, undefined, 0);
        if (typeof handle === 'number') throw bindError(spec, handle);
        handles.push(handle);
        chmodSync(spec.path, spec.mode ?? 0o666);
        listeners.push({ name: spec.name, fd: handle.fd, address: listenerAddress(spec), ...(spec.backlog ? { backlog: spec.backlog } : {}) });
      } else {
        const family = net.isIP(spec.host);
        if (family === 0) throw new SupervisorError(SupervisorErrorCode.Listener, `listener "${spec.name}": host ${JSON.stringify(spec.host)} is not an IP address`);
        const handle = create(spec.host, spec.port, family, undefined, 0);
        if (typeof handle === 'number') throw bindError(spec, handle);
        handles.push(handle);
        // libuv defers a failed bind (EADDRINUSE) to listen(): check the socket really is bound.
        const out: Record<string, unknown> = {};
        handle.getsockname?.(out);
        const port = typeof out.port === 'number' ? out.port : 0;
        if (port === 0 || (spec.port !== 0 && port !== spec.port)) throw bindError(spec, -98);
        listeners.push({ name: spec.name, fd: handle.fd, address: listenerAddress({ ...spec, port }), ...(spec.backlog ? { backlog: spec.backlog } : {}) });
      }
    }
  } catch (error) {
    for (const h of handles) h.close();
    throw error;
  }
  return {
    listeners,
    close: () => {
      for (const h of handles) h.close();
    },
  };
}

/**
 * Puts held sockets in LISTEN without accepting on them, so that connections queue (up to
 * each backlog) from now on instead of being refused until the first daemon listens, and
 * returns each socket's real address (`tcp:host:port` or `unix:/path`: a socket passed by
 * systemd may differ from the configuration). A listening libuv server in this process would
 * accept connections itself, so a one-shot child inherits the sockets, calls
 * `listen(backlog)` on each (again, for one already listening: that only sets the backlog)
 * and exits before its event loop ever runs: it accepts nothing, and the sockets stay in
 * LISTEN while this process holds them.
 * @throws SupervisorError HANDOFF_LISTENER when a socket cannot listen.
 */
export function startListening(listeners: readonly HeldListener[]): string[] {
  if (listeners.length === 0) return [];
  const backlogs = listeners.map((l) => l.backlog ?? 511);
  // listen({ fd }, backlog) honours the backlog. 'listening' and 'error' are emitted on the
  // next tick, which runs before the first poll of the event loop.
  const script = `const net = require('node:net');
const backlogs = ${JSON.stringify(backlogs)};
const addresses = [];
let left = backlogs.length;
backlogs.forEach((backlog, i) => {
  const server = net.createServer();
  server.once('error', (e) => { process.stderr.write(String(i) + ' ' + e.message); process.exit(1); });
  server.once('listening', () => {
    const a = server.address();
    // (A Unix socket opened from an fd has no name in Node: null, and the given address stays.)
    addresses[i] = a === null ? null : typeof a === 'string' ? 'unix:' + a : a.family === 'IPv6' ? 'tcp:[' + a.address + ']:' + a.port : 'tcp:' + a.address + ':' + a.port;
    if (--left === 0) { process.stdout.write(JSON.stringify(addresses)); process.exit(0); }
  });
  server.listen({ fd: 3 + i }, backlog);
});`;
  const result = spawnSync(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe', ...listeners.map((l) => l.fd)], timeout: 30_000, encoding: 'utf8' });
  if (result.status !== 0) {
    const [index, ...message] = (result.stderr || '').split(' ');
    const which = listeners[Number(index)] ?? listeners[0];
    throw new SupervisorError(
      SupervisorErrorCode.Listener,
      `listener "${which?.name ?? '?'}" (${which?.address ?? '?'}): cannot listen: ${message.join(' ') || result.error?.message || `the helper exited with ${String(result.status ?? result.signal)}`}`,
    );
  }
  const addresses = JSON.parse(result.stdout) as (string | null)[];
  return listeners.map((l, i) => addresses[i] ?? l.address);
}

/** Why `spec` cannot be bound (`errno` is libuv's, negative), and what to do about it. */
function bindError(spec: ListenerSpec, errno: number): SupervisorError {
  let code: string;
  try {
    code = getSystemErrorName(errno);
  } catch {
    code = `errno ${errno}`;
  }
  const unix = 'path' in spec;
  const where = unix ? spec.path : net.isIP(spec.host) === 6 ? `[${spec.host}]:${spec.port}` : `${spec.host}:${spec.port}`;
  let advice: string;
  if (code === 'EADDRINUSE') advice = unix ? 'something else is at that path; is another instance running? if not, remove the file' : 'another process is using it; stop that process or choose another port';
  else if (code === 'EADDRNOTAVAIL') advice = `${unix ? spec.path : spec.host} is not an address of this machine; use the address of a local interface ("ip address" lists them), 127.0.0.1 for loopback only, or 0.0.0.0 for every interface`;
  // (libuv reports a Unix socket path whose directory is missing as EACCES too.)
  else if (code === 'EACCES') advice = unix ? 'permission denied, or its directory does not exist; check that the directory exists and is writable by this user' : 'permission denied: ports below 1024 need root or the CAP_NET_BIND_SERVICE capability; choose a port from 1024 up, or grant the capability';
  else advice = `check the ${unix ? 'path' : 'address'}`;
  return new SupervisorError(SupervisorErrorCode.Listener, `listener "${spec.name}": cannot bind ${where} (${code}): ${advice}`);
}

/**
 * The listeners passed to this process by systemd or a holder (`LISTEN_FDS`, `LISTEN_FDNAMES`,
 * `LISTEN_PID`, as sd_listen_fds(3) defines them), consuming those variables. Empty when none
 * were passed for this process. Their `address` is `fd:<n>` until the caller names it.
 * @throws CoreError HANDOFF_ENV_INVALID when the variables are malformed or name fds that are not sockets.
 */
export function listenersFromEnv(env: NodeJS.ProcessEnv = process.env): HeldListener[] {
  return listenFds(env).map(({ name, fd }) => ({ name, fd, address: `fd:${fd}` }));
}
