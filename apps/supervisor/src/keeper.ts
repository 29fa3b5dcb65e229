/**
 * The keeper: the binary's long-lived process, the one operators and systemd see (the pid
 * file, systemd's MAINPID). It holds the listeners — bound once, or taken from systemd or
 * from a daemon through `LISTEN_FDS` — and runs the supervisor as its child with them.
 * When the supervisor dies for any reason, the keeper starts it again (bounded backoff) and
 * the new one adopts the live daemon through its recovery; the listeners never close, so
 * no connection is refused meanwhile. The keeper carries no protocol logic: it spawns,
 * forwards signals, and exits with the supervisor's code when the supervisor stops.
 *
 * Process tree (README, "Processes"):
 *
 *   handoff-supervisor (keeper: pid file, listeners)
 *   └── handoff-supervisor (supervisor: trigger socket, journal; its own process group)
 *       ├── daemon (incumbent)
 *       └── daemon (successor, during a handoff)
 */
import type { ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { LIST_SEPARATOR, SpawnEnv } from '@handoff/protocol';
import type { HeldListener } from '@handoff/supervisor';
import { spawnWithListenPid } from '@handoff/supervisor/internal';
import type { Config } from './config.js';
import { runShell } from './hooks.js';
import type { PidFile } from './pidfile.js';

/** Variables the keeper sets for its supervisor child. */
export const KeeperEnv = {
  /** The keeper's pid: set only in the supervisor it runs. */
  Pid: 'HANDOFF_KEEPER_PID',
  /** The held listeners' names, addresses and backlogs (JSON), in LISTEN_FDS order. */
  Listeners: 'HANDOFF_KEEPER_LISTENERS',
} as const;

/** Messages from the supervisor child to its keeper (over the child_process IPC channel). */
export type ToKeeper =
  /** Signal handlers are installed: forwarded signals are safe from now on. */
  | { readonly type: 'started' }
  /** Serving: recovery or the cold start is done and the trigger socket is bound. */
  | { readonly type: 'up' }
  /** A stop is under way: the exit that follows ends the keeper too. */
  | { readonly type: 'stopping' }
  /** The supervisor exits to be replaced by a fresh one (new code on disk): start it at once. */
  | { readonly type: 'replace' }
  /** The supervisor exits leaving the daemon serving, for another instance to take over: the keeper exits too. */
  | { readonly type: 'release' };

/** Delays before restarting a supervisor that died, by consecutive deaths. */
const RESTART_DELAYS_MS = [0, 250, 1_000, 2_000, 5_000] as const;
/** A supervisor up this long resets the backoff. */
const STABLE_MS = 30_000;

/** What the keeper runs with. */
export interface KeeperOptions {
  readonly config: Config;
  readonly log: Logger;
  readonly pidFile: PidFile;
  readonly listeners: readonly HeldListener[];
  /** Closes the listeners this process bound (none when they were inherited). */
  readonly closeListeners: () => void;
  /** The supervisor child's command-line arguments (after the script). */
  readonly args: readonly string[];
  /** Called the first time a supervisor is up. */
  readonly onUp?: () => void;
}

/** Runs the keeper until the supervisor stops; never returns. */
export function runKeeper(options: KeeperOptions): Promise<never> {
  const { config, log, listeners } = options;
  let child: ChildProcess | null = null;
  let started = false;
  let up = false;
  let everUp = false;
  let upSince = 0;
  let stopping = false;
  let replacing = false;
  let releasing = false;
  let deaths = 0;
  let pendingSignals: NodeJS.Signals[] = [];
  let respawnTimer: NodeJS.Timeout | null = null;
  let finishing = false;

  const finish = async (code: number, stopped = true): Promise<never> => {
    finishing = true;
    if (stopped && code === 0 && config.hooks.postStop) {
      const r = await runShell(config.hooks.postStop, {}, config.hooks.preHandoffTimeoutMs);
      if (!r.ok) log.error({ exit: r.code, output: r.output }, 'the post_stop hook failed');
    }
    options.closeListeners();
    options.pidFile.release();
    process.exit(code);
  };

  const spawnSupervisor = (): void => {
    respawnTimer = null;
    started = false;
    up = false;
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
    Object.assign(env, {
      [SpawnEnv.ListenFds]: String(listeners.length),
      [SpawnEnv.ListenFdNames]: listeners.map((l) => l.name).join(LIST_SEPARATOR),
      [KeeperEnv.Pid]: String(process.pid),
      [KeeperEnv.Listeners]: JSON.stringify(listeners.map((l) => ({ name: l.name, address: l.address, backlog: l.backlog ?? 511 }))),
    });
    const program = { command: process.execPath, args: [...process.execArgv, process.argv[1] ?? '', ...options.args], env: {}, cwd: null };
    // Its own process group: a terminal's Ctrl-C reaches the keeper alone, which forwards it once.
    const spawned = spawnWithListenPid(program, { env, stdio: ['ignore', 'inherit', 'inherit', ...listeners.map((l) => l.fd), 'ipc'], detached: true });
    child = spawned;
    spawned.on('message', (message: ToKeeper) => {
      switch (message.type) {
        case 'started': {
          started = true;
          const queued = pendingSignals;
          pendingSignals = [];
          for (const s of queued) spawned.kill(s);
          return;
        }
        case 'up':
          if (!everUp) options.onUp?.();
          up = true;
          everUp = true;
          upSince = Date.now();
          return;
        case 'stopping':
          stopping = true;
          return;
        case 'replace':
          replacing = true;
          return;
        case 'release':
          releasing = true;
          return;
      }
    });
    spawned.once('exit', (code, signal) => {
      child = null;
      if (finishing) return;
      if (releasing) {
        log.info('released: the daemon serves on, for the instance taking over');
        void finish(0, false);
        return;
      }
      if (replacing) {
        replacing = false;
        log.info({ supervisorPid: spawned.pid }, 'supervisor exited to be replaced: starting the new one');
        spawnSupervisor();
        return;
      }
      // A stop, or a start-up failure the supervisor already cleaned up after (it stops any
      // daemon it started before exiting): the keeper ends with it.
      if (signal === null && (code === 0 || stopping || !everUp)) {
        void finish(code ?? 1);
        return;
      }
      if (up && Date.now() - upSince > STABLE_MS) deaths = 0;
      const delay = RESTART_DELAYS_MS[Math.min(deaths, RESTART_DELAYS_MS.length - 1)] ?? 5_000;
      deaths++;
      const how = signal ? `killed by ${signal}` : `exit code ${String(code)}`;
      if (stopping) {
        // It died while stopping: a new one adopts the daemon and finishes the stop.
        pendingSignals = ['SIGTERM'];
        log.warn({ supervisorPid: spawned.pid }, `supervisor ${how} while stopping: starting another to finish the stop`);
        spawnSupervisor();
        return;
      }
      log.warn({ supervisorPid: spawned.pid, delayMs: delay }, `supervisor ${how}: restarting it${delay ? ` in ${delay} ms` : ''}; the daemon serves on and will be adopted`);
      respawnTimer = setTimeout(spawnSupervisor, delay);
    });
  };

  const forward = (signal: NodeJS.Signals): void => {
    if (signal !== 'SIGHUP') stopping = true;
    if (child && started) {
      child.kill(signal);
      return;
    }
    if (signal === 'SIGHUP') return; // nobody to hand off yet
    pendingSignals.push(signal);
    if (!child) {
      if (respawnTimer) clearTimeout(respawnTimer);
      spawnSupervisor();
    }
  };
  process.on('SIGTERM', () => {
    forward('SIGTERM');
  });
  process.on('SIGINT', () => {
    forward('SIGINT');
  });
  process.on('SIGHUP', () => {
    forward('SIGHUP');
  });

  spawnSupervisor();
  return new Promise<never>(() => undefined);
}
