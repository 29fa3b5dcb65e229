/**
 * Spawning daemons under the spawn contract, and stopping them.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { HeldListener } from './listeners.js';

/** The program to run as the daemon. */
export interface DaemonCommand {
  readonly command: string;
  readonly args?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
}

/** A spawned daemon. */
export interface SpawnedDaemon {
  readonly child: ChildProcess;
  /** The supervisor's end of the successor's channel (successors only). */
  readonly channel: Socket | null;
  /** Resolves with how the process ended. */
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>;
}

/** Environment variables of the spawn contract that must not leak from the supervisor's own environment. */
const CONTRACT_VARS = [
  'LISTEN_FDS',
  'LISTEN_FDNAMES',
  'LISTEN_PID',
  'HANDOFF_ROLE',
  'HANDOFF_SOCK_FD',
  'HANDOFF_RESERVE_COPIES',
  'HANDOFF_CONTROL_SOCKET',
  'HANDOFF_HEARTBEAT_MS',
  'HANDOFF_LIVENESS_MS',
  'HANDOFF_LISTEN_BACKLOGS',
  'HANDOFF_LISTEN_ADDRESSES',
  'NODE_CHANNEL_FD',
  'NODE_CHANNEL_SERIALIZATION_MODE',
];

/**
 * Spawns `command` with the listeners at fds 3.., `reserveCopies` more copies of them after,
 * and for a successor a socket pair after those.
 */
export function spawnDaemon(
  command: DaemonCommand,
  options: {
    readonly role: 'cold' | 'successor';
    readonly listeners: readonly HeldListener[];
    readonly reserveCopies: number;
    readonly controlSocket: string;
    readonly timing: { readonly heartbeatMs: number; readonly livenessMs: number };
    /** The daemon's stdout and stderr: the supervisor's own (default), or pipes to read. */
    readonly output?: 'inherit' | 'pipe';
  },
): SpawnedDaemon {
  const fds = options.listeners.map((l) => l.fd);
  const output = options.output ?? 'inherit';
  const stdio: StdioOptions = ['ignore', output, output, ...fds];
  for (let c = 0; c < options.reserveCopies; c++) stdio.push(...fds);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !CONTRACT_VARS.includes(k)) env[k] = v;
  Object.assign(env, command.env ?? {}, {
    LISTEN_FDS: String(fds.length),
    LISTEN_FDNAMES: options.listeners.map((l) => l.name).join(':'),
    HANDOFF_RESERVE_COPIES: String(options.reserveCopies),
    HANDOFF_CONTROL_SOCKET: options.controlSocket,
    HANDOFF_HEARTBEAT_MS: String(options.timing.heartbeatMs),
    HANDOFF_LIVENESS_MS: String(options.timing.livenessMs),
    HANDOFF_LISTEN_BACKLOGS: options.listeners.map((l) => String(l.backlog ?? 511)).join(':'),
  });
  let channelIndex = -1;
  if (options.role === 'successor') {
    channelIndex = stdio.length;
    stdio.push('pipe');
    env.HANDOFF_ROLE = 'successor';
    env.HANDOFF_SOCK_FD = String(channelIndex);
  }
  const child = spawn(command.command, [...(command.args ?? [])], { stdio, env, ...(command.cwd ? { cwd: command.cwd } : {}) });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      resolve({ code, signal });
    });
    child.once('error', () => {
      if (child.pid === undefined) resolve({ code: null, signal: null });
    });
  });
  const channel = channelIndex >= 0 ? (child.stdio[channelIndex] as Socket | null) : null;
  return { child, channel, exited };
}

/** True when a process with `pid` exists (a zombie counts until reaped). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The start time of `pid` from /proc (clock ticks since boot), to tell a reused pid apart; null if unknown. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

/** Resolves when `pid` is gone (polling), or false after `timeoutMs`. */
export async function waitForDeath(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

/**
 * Stops a process: SIGTERM (and SIGCONT, so a stopped one can handle it), then SIGKILL after
 * `graceMs`. Resolves once it is gone. For a child, pass its `exited` promise so it is reaped.
 */
export async function stopProcess(pid: number, graceMs: number, exited?: Promise<unknown>): Promise<void> {
  const gone = exited ?? waitForDeath(pid, 24 * 3600 * 1000);
  const signal = (s: NodeJS.Signals): void => {
    try {
      process.kill(pid, s);
    } catch {
      // already gone
    }
  };
  signal('SIGTERM');
  signal('SIGCONT');
  const timer = setTimeout(() => {
    signal('SIGKILL');
  }, graceMs);
  try {
    await gone;
  } finally {
    clearTimeout(timer);
  }
}
