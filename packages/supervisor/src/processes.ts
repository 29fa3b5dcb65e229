/**
 * Spawning daemons under the spawn contract, and stopping them.
 *
 * A program is started through `/bin/sh -c 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"'`:
 * the shell learns its own pid, exports it and execs the program, which keeps that pid. So
 * `LISTEN_PID` names the daemon's own pid, as systemd sets it (sd_listen_fds(3) ignores
 * listeners whose `LISTEN_PID` is another process's), which Node's `spawn` cannot do itself.
 */
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { accessSync, constants, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import type { Socket } from 'node:net';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { SHELL, spawnWithListenPid as spawnShell } from '@handoff/core/internal';
import { FAILURE_FILE_MAX, LIST_SEPARATOR, SpawnEnv } from '@handoff/protocol';
import type { DaemonProgram } from '@handoff/protocol';
import { DescriptorChannel, FD_CHANNEL_NODE_IPC } from './descriptors.js';
import { SupervisorError, SupervisorErrorCode } from './errors.js';
import type { HeldListener } from './listeners.js';

/** The program to run as the daemon: `env` is set over the supervisor's environment; `cwd` defaults to the supervisor's. */
export interface DaemonCommand {
  readonly command: string;
  readonly args?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string | null;
}

/** The full program of a {@link DaemonCommand}. */
export function toProgram(command: DaemonCommand): DaemonProgram {
  return { command: command.command, args: command.args ?? [], env: command.env ?? {}, cwd: command.cwd ?? null };
}

/** A spawned daemon. */
export interface SpawnedDaemon {
  readonly child: ChildProcess;
  /** The pid (spawning through the shell keeps it: the shell execs the program). */
  readonly pid: number;
  /** The supervisor's end of the successor's channel (successors only). */
  readonly channel: Socket | null;
  /** Its descriptor channel (moved connections' descriptors pass there), unless spawned without. */
  readonly descriptors: DescriptorChannel | null;
  /** Resolves with how the process ended. */
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>;
}

/** Variables that must not leak from the supervisor's own environment into a daemon's. */
// systemd's notify and watchdog variables are the supervisor's: it speaks for the service.
const NOT_INHERITED: readonly string[] = [...Object.values(SpawnEnv), 'NODE_CHANNEL_FD', 'NODE_CHANNEL_SERIALIZATION_MODE', 'NOTIFY_SOCKET', 'WATCHDOG_PID', 'WATCHDOG_USEC'];


/**
 * Checks what a spawn would otherwise report late and vaguely (`spawn ... ENOENT`, or a
 * shell's exit 127): that the working directory exists and the command is an executable.
 * @throws SupervisorError HANDOFF_SPAWN saying which and what to do.
 */
export function checkProgram(program: DaemonProgram, env: Readonly<Record<string, string | undefined>> = process.env): void {
  try {
    accessSync(SHELL, constants.X_OK);
  } catch {
    throw new SupervisorError(SupervisorErrorCode.Spawn, `the supervisor starts daemons through ${SHELL} (to set LISTEN_PID to the daemon's pid), and this system has none; install a POSIX shell there`);
  }
  const cwd = program.cwd ?? process.cwd();
  let isDir: boolean;
  try {
    isDir = statSync(cwd).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) throw new SupervisorError(SupervisorErrorCode.Spawn, `the daemon's working directory ${cwd} does not exist or is not a directory; fix [daemon] cwd`);
  const executable = (path: string): boolean => {
    try {
      accessSync(path, constants.X_OK);
      return statSync(path).isFile();
    } catch {
      return false;
    }
  };
  const command = program.command;
  if (command.includes('/')) {
    const path = isAbsolute(command) ? command : resolve(cwd, command);
    if (!executable(path)) throw new SupervisorError(SupervisorErrorCode.Spawn, `the daemon's command ${path} does not exist or is not executable; fix the command`);
    return;
  }
  const dirs = (program.env.PATH ?? env.PATH ?? '').split(delimiter).filter((d) => d !== '');
  if (!dirs.some((d) => executable(join(isAbsolute(d) ? d : resolve(cwd, d), command)))) {
    throw new SupervisorError(SupervisorErrorCode.Spawn, `the daemon's command ${JSON.stringify(command)} is not an executable in PATH (${dirs.join(delimiter)}); give its absolute path`);
  }
}

/**
 * Starts `program` with `LISTEN_PID` set to its own pid, in exactly the environment
 * `options.env` (`program.env` is the caller's to merge), with `options.stdio` (listeners
 * from slot 3).
 * @throws SupervisorError HANDOFF_SPAWN when the command or the working directory is missing.
 */
export function spawnWithListenPid(program: DaemonProgram, options: { readonly env: Readonly<Record<string, string>>; readonly stdio: StdioOptions; readonly detached?: boolean }): ChildProcess {
  checkProgram(program, options.env);
  return spawnShell(program.command, program.args, { env: options.env, stdio: options.stdio, cwd: program.cwd ?? undefined, detached: options.detached ?? false });
}

/** How a daemon is spawned. */
export interface SpawnOptions {
  readonly role: 'cold' | 'successor';
  readonly listeners: readonly HeldListener[];
  readonly reserveCopies: number;
  readonly controlSocket: string;
  /** The data directory, passed as `HANDOFF_DATA_DIR` (not set when null). */
  readonly dataDir: string | null;
  readonly timing: { readonly heartbeatMs: number; readonly livenessMs: number; readonly helloMs: number };
  /** The daemon's stdout and stderr: the supervisor's own (default), or pipes to read. */
  readonly output?: 'inherit' | 'pipe';
  /** Where the daemon may write its last lines of output if it exits before it serves (see {@link readFailureFile}). */
  readonly failureFile?: string;
  /** Give it a descriptor channel, so its connections can move at a handoff (default true). */
  readonly fdChannel?: boolean;
}

/**
 * What a daemon that failed wrote to its failure file (its last lines of output, at most
 * `FAILURE_FILE_MAX` bytes), or null; the file is removed.
 */
export function readFailureFile(path: string | undefined): string | null {
  if (path === undefined) return null;
  let text: string | null = null;
  try {
    const buffer = readFileSync(path);
    text = buffer.subarray(Math.max(0, buffer.length - FAILURE_FILE_MAX)).toString('utf8').trim() || null;
  } catch {
    // nothing written
  }
  rmSync(path, { force: true });
  return text;
}

/**
 * Spawns `program` with the listeners at fds 3.., `reserveCopies` more copies of them after,
 * and for a successor a socket pair after those (PROTOCOL.md section 2).
 * @throws SupervisorError HANDOFF_SPAWN when the command or the working directory is missing,
 * or the process could not be created.
 */
export function spawnDaemon(program: DaemonProgram, options: SpawnOptions): SpawnedDaemon {
  const fds = options.listeners.map((l) => l.fd);
  const output = options.output ?? 'inherit';
  const stdio: StdioOptions = ['ignore', output, output, ...fds];
  for (let c = 0; c < options.reserveCopies; c++) stdio.push(...fds);
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !NOT_INHERITED.includes(k)) env[k] = v;
  // The contract's variables are the supervisor's to set, whatever the program's env says.
  for (const [k, v] of Object.entries(program.env)) if (!NOT_INHERITED.includes(k)) env[k] = v;
  Object.assign(env, {
    [SpawnEnv.ListenFds]: String(fds.length),
    [SpawnEnv.ListenFdNames]: options.listeners.map((l) => l.name).join(LIST_SEPARATOR),
    [SpawnEnv.ReserveCopies]: String(options.reserveCopies),
    [SpawnEnv.ControlSocket]: options.controlSocket,
    ...(options.dataDir === null ? {} : { [SpawnEnv.DataDir]: options.dataDir }),
    [SpawnEnv.HeartbeatMs]: String(options.timing.heartbeatMs),
    [SpawnEnv.LivenessMs]: String(options.timing.livenessMs),
    [SpawnEnv.HelloMs]: String(options.timing.helloMs),
    [SpawnEnv.Backlogs]: options.listeners.map((l) => String(l.backlog ?? 511)).join(LIST_SEPARATOR),
    ...(options.failureFile === undefined ? {} : { [SpawnEnv.FailureFile]: options.failureFile }),
  });
  let channelIndex = -1;
  if (options.role === 'successor') {
    channelIndex = stdio.length;
    stdio.push('pipe');
    env[SpawnEnv.Role] = 'successor';
    env[SpawnEnv.SockFd] = String(channelIndex);
  }
  // Last, after every numbered fd of the contract: Node sets NODE_CHANNEL_FD to its index.
  const fdChannel = options.fdChannel ?? true;
  if (fdChannel) {
    stdio.push('ipc');
    env[SpawnEnv.FdChannel] = FD_CHANNEL_NODE_IPC;
  }
  const child = spawnWithListenPid(program, { env, stdio });
  if (child.pid === undefined) {
    // The process could not be created at all (e.g. E2BIG); 'error' follows asynchronously.
    child.once('error', () => undefined);
    throw new SupervisorError(SupervisorErrorCode.Spawn, `cannot create a process (${SHELL}) for the daemon ${program.command}: arguments and environment too large, or out of processes?`);
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => {
    child.once('exit', (code, signal) => {
      done({ code, signal });
    });
  });
  const channel = channelIndex >= 0 ? (child.stdio[channelIndex] as Socket | null) : null;
  return { child, pid: child.pid, channel, exited, descriptors: fdChannel ? new DescriptorChannel(child) : null };
}

/** How a process ended, in words. */
export function describeExit(exit: { readonly code: number | null; readonly signal: NodeJS.Signals | null }): string {
  return exit.signal ? `killed by ${exit.signal}` : `exit code ${String(exit.code)}`;
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

/**
 * Whether this process may give a process it lowered (raised its nice value by `by`) its
 * priority back: unprivileged processes may only lower priorities (setpriority(2)), unless
 * they have CAP_SYS_NICE (root) or RLIMIT_NICE allows the base priority.
 */
export function mayRestorePriority(by: number): boolean {
  if (by <= 0) return false;
  try {
    const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    if (capEff !== undefined && (BigInt(`0x${capEff}`) & (1n << 23n)) !== 0n) return true;
    const soft = /^Max nice priority\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
    return soft === 'unlimited' || (soft !== undefined && 20 - Number(soft) <= getPriority());
  } catch {
    return false;
  }
}

/** Lowers the scheduling priority of `pid` (its main thread, whose nice value the threads it starts inherit) by `by`; false if it could not. */
export function lowerPriority(pid: number, by: number): boolean {
  try {
    setPriority(pid, Math.min(19, getPriority() + by));
    return true;
  } catch {
    return false;
  }
}

/** Gives every thread of `pid` this process's own priority again (nice values are per thread on Linux). */
export function restorePriority(pid: number): void {
  const base = getPriority();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    tids = [String(pid)];
  }
  for (const tid of tids) {
    try {
      setPriority(Number(tid), base);
    } catch {
      // the thread is gone
    }
  }
}

/**
 * The CPU time `pid` used so far (all its threads, user and system), in ms, and the state of
 * its main thread (`R` running or runnable, `S` sleeping, `D` in uninterruptible I/O, `T`
 * stopped, ...); null when it cannot be read.
 */
export function processCpu(pid: number): { readonly cpuMs: number; readonly state: string } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime, in clock ticks of 1/100 s (USER_HZ on Linux).
    return { cpuMs: (Number(fields[11]) + Number(fields[12])) * 10, state: fields[0] ?? '?' };
  } catch {
    return null;
  }
}

/** Resolves when `pid` is gone (polling), or false after `timeoutMs`. */
export async function waitForDeath(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
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
