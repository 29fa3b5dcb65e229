/**
 * The spawn contract (DESIGN section 3, PROTOCOL.md section 2), read from the environment:
 *
 * - fds `3 .. 3+n-1`: listening sockets; `LISTEN_FDS=n`; `LISTEN_FDNAMES=a:b:...`;
 *   `LISTEN_PID`, when set, must be this process's pid (systemd).
 * - `HANDOFF_RESERVE_COPIES=k`: then `k` more copies of the same sockets follow, in the same
 *   order (fds `3+n .. 3+n+k*n-1`), so the daemon can accept again after closing a server.
 * - `HANDOFF_ROLE=successor` and `HANDOFF_SOCK_FD=<fd>`: the successor's channel.
 * - `HANDOFF_CONTROL_SOCKET=<path>`: where the incumbent serves supervisor sessions.
 * - `HANDOFF_HEARTBEAT_MS`, `HANDOFF_LIVENESS_MS`: the supervisor's timing, so both sides agree.
 * - `HANDOFF_LISTEN_BACKLOGS=511:128`: the accept backlog of each listener, in fd order.
 *
 * {@link detectRole} consumes these variables, so a second call in the same process, or a
 * child process, sees a cold start with nothing inherited.
 */
import { fstatSync } from 'node:fs';
import { CoreErrorCode, HandoffError } from './errors.js';
import { InheritedListeners } from './listeners.js';

/** Names of the spawn contract's environment variables. */
export const SpawnEnv = {
  ListenFds: 'LISTEN_FDS',
  ListenFdNames: 'LISTEN_FDNAMES',
  ListenPid: 'LISTEN_PID',
  ReserveCopies: 'HANDOFF_RESERVE_COPIES',
  Role: 'HANDOFF_ROLE',
  SockFd: 'HANDOFF_SOCK_FD',
  ControlSocket: 'HANDOFF_CONTROL_SOCKET',
  HeartbeatMs: 'HANDOFF_HEARTBEAT_MS',
  LivenessMs: 'HANDOFF_LIVENESS_MS',
  Backlogs: 'HANDOFF_LISTEN_BACKLOGS',
} as const;

/** The supervisor's timing, when it passed it. */
export interface SpawnTiming {
  readonly heartbeatMs: number | null;
  readonly livenessMs: number | null;
}

/** The first inherited fd. */
export const LISTEN_FDS_START = 3;

/** What a process learns about itself at start. */
export type DetectedRole =
  | {
      readonly role: 'cold';
      readonly listeners: InheritedListeners;
      readonly controlSocket: string | null;
      readonly timing: SpawnTiming;
    }
  | {
      readonly role: 'successor';
      readonly listeners: InheritedListeners;
      readonly controlSocket: string | null;
      readonly timing: SpawnTiming;
      /** The fd of this process's end of the socket pair to the supervisor. */
      readonly channelFd: number;
    };

function parseCount(env: NodeJS.ProcessEnv, name: string, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return 0;
  if (!/^\d+$/.test(raw) || Number(raw) > max) {
    throw new HandoffError(CoreErrorCode.EnvInvalid, `${name}=${JSON.stringify(raw)} is not a count from 0 to ${max}; check the process that spawned this one`);
  }
  return Number(raw);
}

function checkSocketFd(fd: number, what: string): void {
  let ok: boolean;
  try {
    ok = fstatSync(fd).isSocket();
  } catch (cause) {
    throw new HandoffError(CoreErrorCode.EnvInvalid, `${what} is fd ${fd}, which is not open in this process; the spawner must pass it in stdio slot ${fd}`, { cause });
  }
  if (!ok) throw new HandoffError(CoreErrorCode.EnvInvalid, `${what} is fd ${fd}, which is not a socket`);
}

/**
 * Reads and removes the spawn contract's variables.
 * @throws HandoffError HANDOFF_ENV_INVALID when they are malformed or name fds that are not sockets.
 */
export function detectRole(env: NodeJS.ProcessEnv = process.env): DetectedRole {
  const pidFor = env[SpawnEnv.ListenPid];
  const forUs = pidFor === undefined || pidFor === '' || pidFor === String(process.pid);
  const count = forUs ? parseCount(env, SpawnEnv.ListenFds, 64) : 0;
  const copies = forUs ? parseCount(env, SpawnEnv.ReserveCopies, 16) : 0;
  const names = (env[SpawnEnv.ListenFdNames] ?? '').split(':').filter((n) => n !== '');
  if (count > 0 && names.length !== 0 && names.length !== count) {
    throw new HandoffError(CoreErrorCode.EnvInvalid, `LISTEN_FDNAMES names ${names.length} listeners but LISTEN_FDS=${count}`);
  }
  const role = env[SpawnEnv.Role];
  if (role !== undefined && role !== '' && role !== 'successor') {
    throw new HandoffError(CoreErrorCode.EnvInvalid, `HANDOFF_ROLE=${JSON.stringify(role)}: the only role a spawner sets is "successor"`);
  }
  const controlSocket = env[SpawnEnv.ControlSocket] ?? null;
  let channelFd: number | null = null;
  if (role === 'successor') {
    const raw = env[SpawnEnv.SockFd] ?? '';
    if (!/^\d+$/.test(raw)) throw new HandoffError(CoreErrorCode.EnvInvalid, `HANDOFF_ROLE=successor needs HANDOFF_SOCK_FD=<fd>, got ${JSON.stringify(raw)}`);
    channelFd = Number(raw);
    checkSocketFd(channelFd, 'HANDOFF_SOCK_FD');
  }
  const backlogs = (env[SpawnEnv.Backlogs] ?? '').split(':');
  const entries = Array.from({ length: count }, (_, i) => {
    const fd = LISTEN_FDS_START + i;
    const backlog = /^\d+$/.test(backlogs[i] ?? '') ? Number(backlogs[i]) : undefined;
    checkSocketFd(fd, `listener ${i}`);
    const reserves = Array.from({ length: copies }, (_, c) => LISTEN_FDS_START + count * (c + 1) + i);
    for (const r of reserves) checkSocketFd(r, `reserve copy of listener ${i}`);
    return { name: names[i] ?? `fd${fd}`, fd, reserves, ...(backlog ? { backlog } : {}) };
  });
  const ms = (name: string): number | null => {
    const n = parseCount(env, name, 86_400_000);
    return n > 0 ? n : null;
  };
  const timing: SpawnTiming = { heartbeatMs: ms(SpawnEnv.HeartbeatMs), livenessMs: ms(SpawnEnv.LivenessMs) };
  for (const name of Object.values(SpawnEnv)) Reflect.deleteProperty(env, name);
  const listeners = new InheritedListeners(entries);
  if (channelFd !== null) return { role: 'successor', listeners, controlSocket, timing, channelFd };
  return { role: 'cold', listeners, controlSocket, timing };
}
