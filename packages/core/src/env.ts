/**
 * The spawn contract (PROTOCOL.md section 2), read from the environment (the variables'
 * names are `SpawnEnv` of `@handoff/protocol`):
 *
 * - fds `3 .. 3+n-1`: listening sockets; `LISTEN_FDS=n`; `LISTEN_FDNAMES=a:b:...`;
 *   `LISTEN_PID` must be this process's pid, as systemd defines it (sd_listen_fds(3)):
 *   listeners meant for another process (a parent's, inherited by accident) are ignored.
 * - `HANDOFF_RESERVE_COPIES=k`: then `k` more copies of the same sockets follow, in the same
 *   order (fds `3+n .. 3+n+k*n-1`), so the daemon can accept again after closing a server.
 * - `HANDOFF_ROLE=successor` and `HANDOFF_SOCK_FD=<fd>`: the successor's channel.
 * - `HANDOFF_CONTROL_SOCKET=<path>`: where the incumbent serves supervisor sessions.
 * - `HANDOFF_HEARTBEAT_MS`, `HANDOFF_LIVENESS_MS`: the supervisor's timing, so both sides agree;
 *   `HANDOFF_HELLO_MS`: how long a successor may take to say Hello (its preload's budget).
 * - `HANDOFF_LISTEN_BACKLOGS=511:128`: the accept backlog of each listener, in fd order.
 * - `HANDOFF_DATA_DIR=<path>`: the data directory to lock and open.
 *
 * {@link detectRole} consumes these variables, so a second call in the same process, or a
 * child process, sees a cold start.
 */
import { fstatSync } from 'node:fs';
import { LISTEN_FDS_START, LIST_SEPARATOR, SpawnEnv } from '@handoff/protocol';
import { CoreError, CoreErrorCode } from './errors.js';
import { InheritedListeners } from './listeners.js';

/** The supervisor's timing, when it passed it. */
export interface SpawnTiming {
  readonly heartbeatMs: number | null;
  readonly livenessMs: number | null;
  /** The supervisor's hello timeout: a successor's preload must end within it (null: not given). */
  readonly helloMs: number | null;
}

/** What a process learns about itself at start. */
export type DetectedRole =
  | {
      readonly role: 'cold';
      readonly listeners: InheritedListeners;
      readonly controlSocket: string | null;
      /** `HANDOFF_DATA_DIR`: the data directory the supervisor configured, if it passed one. */
      readonly dataDir: string | null;
      readonly timing: SpawnTiming;
      /** `HANDOFF_FD_CHANNEL`: how descriptors of moved connections reach this process (`node-ipc`), or null. */
      readonly fdChannel: string | null;
    }
  | {
      readonly role: 'successor';
      readonly listeners: InheritedListeners;
      readonly controlSocket: string | null;
      /** `HANDOFF_DATA_DIR`: the data directory the supervisor configured, if it passed one. */
      readonly dataDir: string | null;
      readonly timing: SpawnTiming;
      /** The fd of this process's end of the socket pair to the supervisor. */
      readonly channelFd: number;
      /** `HANDOFF_FD_CHANNEL`: how descriptors of moved connections reach this process (`node-ipc`), or null. */
      readonly fdChannel: string | null;
    };

/** What every message about a malformed variable of the contract ends with. */
const SET_BY = 'these variables are set by handoff-supervisor (LISTEN_* also by systemd) for the process it starts: do not set them by hand';

function invalid(name: string, raw: string, expected: string): CoreError {
  return new CoreError(CoreErrorCode.EnvInvalid, `${name}=${JSON.stringify(raw)} ${expected}; ${SET_BY}`);
}

function parseCount(env: NodeJS.ProcessEnv, name: string, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return 0;
  if (!/^\d+$/.test(raw) || Number(raw) > max) throw invalid(name, raw, `is not a count from 0 to ${max}`);
  return Number(raw);
}

function checkSocketFd(fd: number, what: string): void {
  let ok: boolean;
  try {
    ok = fstatSync(fd).isSocket();
  } catch (cause) {
    throw new CoreError(CoreErrorCode.EnvInvalid, `${what} is fd ${fd}, which is not open in this process; the spawner must pass it in stdio slot ${fd}; ${SET_BY}`, { cause });
  }
  if (!ok) throw new CoreError(CoreErrorCode.EnvInvalid, `${what} is fd ${fd}, which is not a socket; ${SET_BY}`);
}

/** A listening socket passed by fd, systemd-style. */
export interface ListenFd {
  readonly name: string;
  readonly fd: number;
}

/**
 * The listening sockets passed to this process systemd-style, as sd_listen_fds(3) defines
 * it: `LISTEN_PID` must be this process's pid (unset or another pid: they are not for this
 * process, and none are returned), `LISTEN_FDS=n` sockets from fd 3, named by
 * `LISTEN_FDNAMES` (default `fd<N>`). Consumes the three variables. Each fd is checked to be
 * an open socket.
 * @throws CoreError HANDOFF_ENV_INVALID when the variables are malformed or name fds that are not sockets.
 */
export function listenFds(env: NodeJS.ProcessEnv = process.env, pid: number = process.pid): ListenFd[] {
  const forUs = env[SpawnEnv.ListenPid] === String(pid);
  const count = forUs ? parseCount(env, SpawnEnv.ListenFds, 64) : 0;
  const names = (env[SpawnEnv.ListenFdNames] ?? '').split(LIST_SEPARATOR).filter((n) => n !== '');
  for (const name of [SpawnEnv.ListenPid, SpawnEnv.ListenFds, SpawnEnv.ListenFdNames]) Reflect.deleteProperty(env, name);
  if (count > 0 && names.length !== 0 && names.length !== count) {
    throw new CoreError(CoreErrorCode.EnvInvalid, `LISTEN_FDNAMES names ${names.length} listeners but LISTEN_FDS=${count}; ${SET_BY}`);
  }
  return Array.from({ length: count }, (_, i) => {
    const fd = LISTEN_FDS_START + i;
    checkSocketFd(fd, `listener ${i} (LISTEN_FDS)`);
    return { name: names[i] ?? `fd${fd}`, fd };
  });
}

/**
 * Reads and removes the spawn contract's variables.
 * @throws CoreError HANDOFF_ENV_INVALID when they are malformed or name fds that are not sockets.
 */
export function detectRole(env: NodeJS.ProcessEnv = process.env): DetectedRole {
  const forUs = env[SpawnEnv.ListenPid] === String(process.pid);
  const copies = forUs ? parseCount(env, SpawnEnv.ReserveCopies, 16) : 0;
  const listening = listenFds(env);
  const role = env[SpawnEnv.Role];
  if (role !== undefined && role !== '' && role !== 'successor') throw invalid(SpawnEnv.Role, role, 'is not a role: the only one is "successor" (unset: a cold start)');
  // (Empty: unset, as for the other variables.)
  const controlSocket = env[SpawnEnv.ControlSocket] || null;
  const dataDir = env[SpawnEnv.DataDir] || null;
  const fdChannel = env[SpawnEnv.FdChannel] || null;
  let channelFd: number | null = null;
  if (role === 'successor') {
    const raw = env[SpawnEnv.SockFd] ?? '';
    if (!/^\d+$/.test(raw)) throw invalid(SpawnEnv.SockFd, raw, 'is not an fd number, which HANDOFF_ROLE=successor needs');
    channelFd = Number(raw);
    checkSocketFd(channelFd, SpawnEnv.SockFd);
  }
  const backlogsRaw = env[SpawnEnv.Backlogs] ?? '';
  const backlogs = backlogsRaw === '' ? [] : backlogsRaw.split(LIST_SEPARATOR);
  if (backlogs.some((b) => !/^\d+$/.test(b) || Number(b) < 1 || Number(b) > 65_535)) {
    throw invalid(SpawnEnv.Backlogs, backlogsRaw, `is not a list of accept backlogs from 1 to 65535, one per listener, separated by "${LIST_SEPARATOR}"`);
  }
  const count = listening.length;
  const entries = listening.map(({ name, fd }, i) => {
    const backlog = backlogs[i] === undefined ? undefined : Number(backlogs[i]);
    const reserves = Array.from({ length: copies }, (_, c) => LISTEN_FDS_START + count * (c + 1) + i);
    for (const r of reserves) checkSocketFd(r, `reserve copy of listener ${i}`);
    return { name, fd, reserves, ...(backlog ? { backlog } : {}) };
  });
  const ms = (name: string): number | null => {
    const n = parseCount(env, name, 86_400_000);
    return n > 0 ? n : null;
  };
  const timing: SpawnTiming = { heartbeatMs: ms(SpawnEnv.HeartbeatMs), livenessMs: ms(SpawnEnv.LivenessMs), helloMs: ms(SpawnEnv.HelloMs) };
  for (const name of Object.values(SpawnEnv)) Reflect.deleteProperty(env, name);
  const listeners = new InheritedListeners(entries);
  if (channelFd !== null) return { role: 'successor', listeners, controlSocket, dataDir, timing, channelFd, fdChannel };
  return { role: 'cold', listeners, controlSocket, dataDir, timing, fdChannel };
}
