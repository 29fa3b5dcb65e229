/**
 * Starting a listener holder (PROTOCOL.md section 6, "Listener holder"): when every process
 * that held the listeners besides the daemon is gone (a supervisor's keeper killed), the
 * daemon is their last holder, and only a process's children can inherit its sockets. Asked
 * on its control session, the daemon starts the given program as its own detached child with
 * the listeners at fds 3.., `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` set as
 * sd_listen_fds(3) expects, so that a new supervisor takes over with no refused connection.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { LIST_SEPARATOR, SpawnEnv } from '@handoff/protocol';
import { messageOf } from '@handoff/protocol/internal';

/** The shell programs are started through (see {@link spawnWithListenPid}). */
export const SHELL = '/bin/sh';
/** Sets `LISTEN_PID` to the pid the program will run as (the shell execs it), then execs it. */
const EXEC_WITH_LISTEN_PID = `${SpawnEnv.ListenPid}=$$; export ${SpawnEnv.ListenPid}; exec "$0" "$@"`;

/**
 * Spawns `command` through `/bin/sh -c 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"'`:
 * the shell exports its own pid and execs the program, which keeps it, so `LISTEN_PID` names
 * the program's own pid as sd_listen_fds(3) requires — which Node's `spawn` cannot do itself.
 */
export function spawnWithListenPid(
  command: string,
  args: readonly string[],
  options: { readonly env: Readonly<Record<string, string>>; readonly stdio: StdioOptions; readonly cwd?: string | undefined; readonly detached?: boolean },
): ChildProcess {
  return spawn(SHELL, ['-c', EXEC_WITH_LISTEN_PID, command, ...args], {
    stdio: options.stdio,
    env: options.env,
    detached: options.detached ?? false,
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
}

/** Starts the holder; resolves with its pid, or an error message saying why not. */
export function spawnHolder(
  request: { readonly argv: readonly string[]; readonly cwd: string; readonly env: readonly string[] },
  listeners: readonly { readonly name: string; readonly fd: number }[],
): { readonly pid: number } | { readonly error: string } {
  const [command, ...args] = request.argv;
  if (listeners.length === 0) return { error: 'this daemon has no listener to pass on (it is stopping, or inherited none)' };
  if (!command || !isAbsolute(command)) return { error: `the holder's program must be an absolute path, got ${JSON.stringify(command ?? '')}` };
  try {
    accessSync(command, constants.X_OK);
    if (!statSync(request.cwd).isDirectory()) return { error: `the holder's working directory ${request.cwd} is not a directory` };
  } catch (error) {
    return { error: `cannot start ${command} in ${request.cwd}: ${messageOf(error)}` };
  }
  const env: Record<string, string> = {};
  for (const entry of request.env) {
    const eq = entry.indexOf('=');
    // LISTEN_PID is the shell's to set, to the holder's own pid.
    if (eq > 0 && entry.slice(0, eq) !== SpawnEnv.ListenPid) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  env[SpawnEnv.ListenFds] = String(listeners.length);
  env[SpawnEnv.ListenFdNames] = listeners.map((l) => l.name).join(LIST_SEPARATOR);
  try {
    const child = spawnWithListenPid(command, args, { cwd: request.cwd, env, detached: true, stdio: ['ignore', 'ignore', 'ignore', ...listeners.map((l) => l.fd)] });
    child.once('error', () => undefined);
    child.unref();
    return child.pid === undefined ? { error: `cannot create a process for ${command}` } : { pid: child.pid };
  } catch (error) {
    return { error: `cannot start ${command}: ${messageOf(error)}` };
  }
}
