/**
 * The keeper: the binary's long-lived process, the one operators and systemd see (the pid
 * file, systemd's MAINPID). It holds the listeners — bound once, or taken from systemd or
 * from a daemon through `LISTEN_FDS` — and runs the supervisor as its child with them.
 * When the supervisor dies, hangs, or exits to be replaced, the keeper starts it again
 * (bounded backoff after deaths) and the new one adopts the live daemon through its
 * recovery; the listeners never close, so no connection is refused meanwhile. The keeper
 * carries no protocol logic: it spawns, passes stop requests on, and exits when the
 * supervisor has stopped.
 *
 * Process tree (README, "Processes"):
 *
 *   handoff-supervisor (keeper: pid file, listeners)
 *   └── handoff-supervisor (supervisor: trigger socket, journal; its own session)
 *       ├── daemon (incumbent)
 *       └── daemon (successor, during a handoff)
 */
import type { ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { LIST_SEPARATOR, SpawnEnv } from '@handoff/protocol';
import { servingDaemonPid } from '@handoff/supervisor';
import type { HeldListener } from '@handoff/supervisor';
import { spawnWithListenPid, stopProcess } from '@handoff/supervisor/internal';
import { configDir } from './config.js';
import type { Config } from './config.js';
import { runShell } from './hooks.js';
import type { PidFile } from './pidfile.js';

/** Variables the keeper sets for its supervisor child. */
export const KeeperEnv = {
  /** The keeper's pid: set only in the supervisor it runs. */
  Pid: 'HANDOFF_KEEPER_PID',
  /** The held listeners' names, addresses and backlogs (JSON), in LISTEN_FDS order: an ephemeral port's address is known only here. */
  Listeners: 'HANDOFF_KEEPER_LISTENERS',
} as const;

/** How the supervisor child tells its keeper why it exits (any other code after it was up: it died). */
export const SupervisorExit = {
  /** Stopped: the daemon drained and sealed (or none was running). */
  Stopped: 0,
  /** Exits to be replaced by a fresh supervisor (the code now on disk): start one at once. */
  Replace: 90,
  /** Exits leaving the daemon serving, for another instance to take over: the keeper exits too. */
  Release: 91,
} as const;

/** Messages from the supervisor child to its keeper (child_process IPC). */
export type ToKeeper =
  /** Its handlers are installed: stop requests can be passed on from now. */
  | { readonly type: 'started' }
  /** Serving: recovery or the cold start is done and the trigger socket is bound. */
  | { readonly type: 'up' }
  /** Still responsive (every {@link ALIVE_EVERY_MS}). */
  | { readonly type: 'alive' };

/** Messages from the keeper to its supervisor. */
export type ToSupervisor =
  /** Stop (drain, seal); `force`: the operator asked twice, SIGKILL the daemon. */
  | { readonly type: 'stop'; readonly force: boolean }
  /** SIGHUP: hand off to the configured command. */
  | { readonly type: 'hup' };

/** How often the supervisor says it is alive, and the silence after which the keeper kills it. */
export const ALIVE_EVERY_MS = 1_000;
const SILENT_MS = 10_000;
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
  let everUp = false;
  let upSince: number | null = null;
  let lastAlive = 0;
  let stopRequests = 0;
  let deaths = 0;
  let respawnTimer: NodeJS.Timeout | null = null;
  let finishing = false;

  // A supervisor that stops answering (a blocked event loop) is killed and replaced.
  const watch = setInterval(() => {
    if (child && started && Date.now() - lastAlive > SILENT_MS) {
      log.error({ supervisorPid: child.pid }, `supervisor silent for ${SILENT_MS} ms: killing it`);
      child.kill('SIGKILL');
    }
  }, ALIVE_EVERY_MS);

  const finish = async (code: number, stopped = true): Promise<never> => {
    finishing = true;
    clearInterval(watch);
    if (stopped && code === 0 && config.hooks.postStop) {
      const r = await runShell(config.hooks.postStop, {}, config.hooks.preHandoffTimeoutMs, configDir(config));
      if (!r.ok) log.error({ exit: r.code, output: r.output }, 'the post_stop hook failed');
    }
    options.closeListeners();
    options.pidFile.release();
    process.exit(code);
  };

  /** A stop whose supervisor failed: stop the daemon as the spawn contract says (SIGTERM: drain, seal, exit), then end. */
  const finishStop = async (code: number): Promise<never> => {
    const holder = servingDaemonPid(config.daemon.dataDir, config.journal);
    if (holder !== null) {
      log.warn({ daemonPid: holder }, 'the supervisor could not finish the stop: stopping the daemon directly (SIGTERM, then SIGKILL after the shutdown timeout)');
      await stopProcess(holder, config.timeouts.shutdownMs);
    }
    return finish(code);
  };

  const send = (message: ToSupervisor): void => {
    if (child?.connected) child.send(message);
  };

  const schedule = (why: string): void => {
    if (upSince !== null && Date.now() - upSince > STABLE_MS) deaths = 0;
    const delay = RESTART_DELAYS_MS[Math.min(deaths, RESTART_DELAYS_MS.length - 1)] ?? 5_000;
    deaths++;
    log.warn({ delayMs: delay }, `supervisor ${why}: restarting it${delay ? ` in ${delay} ms` : ''}; the daemon serves on and will be adopted`);
    respawnTimer = setTimeout(spawnSupervisor, delay);
  };

  const onExit = (spawned: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void => {
    if (child === spawned) child = null;
    if (finishing) return;
    if (code === SupervisorExit.Replace) {
      log.info({ supervisorPid: spawned.pid }, 'supervisor exited to be replaced: starting the new one');
      spawnSupervisor();
      return;
    }
    if (code === SupervisorExit.Release) {
      log.info('released: the daemon serves on, for the instance taking over');
      void finish(0, false);
      return;
    }
    if (code === SupervisorExit.Stopped) {
      void finish(0);
      return;
    }
    const how = signal ? `killed by ${signal}` : `exit code ${String(code)}`;
    if (stopRequests > 0) {
      void finishStop(code ?? 1);
      return;
    }
    // A start-up failure the supervisor cleaned up after (it stops any daemon it started):
    // nothing to restart into.
    if (!everUp && signal === null) {
      void finish(code ?? 1);
      return;
    }
    schedule(how);
  };

  function spawnSupervisor(): void {
    respawnTimer = null;
    started = false;
    upSince = null;
    lastAlive = Date.now();
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
    Object.assign(env, {
      [SpawnEnv.ListenFds]: String(listeners.length),
      [SpawnEnv.ListenFdNames]: listeners.map((l) => l.name).join(LIST_SEPARATOR),
      [KeeperEnv.Pid]: String(process.pid),
      [KeeperEnv.Listeners]: JSON.stringify(listeners.map((l) => ({ name: l.name, address: l.address, backlog: l.backlog ?? 511 }))),
    });
    const program = { command: process.execPath, args: [...process.execArgv, process.argv[1] ?? '', ...options.args], env: {}, cwd: null };
    let spawned: ChildProcess;
    try {
      // Its own session: a terminal's Ctrl-C reaches the keeper alone, which passes it on once.
      spawned = spawnWithListenPid(program, { env, stdio: ['ignore', 'inherit', 'inherit', ...listeners.map((l) => l.fd), 'ipc'], detached: true });
    } catch (error) {
      if (stopRequests > 0) void finishStop(1);
      else schedule(`could not be started (${(error as Error).message})`);
      return;
    }
    child = spawned;
    spawned.once('error', (error) => {
      log.error({ err: error.message }, 'supervisor process error');
      if (spawned.pid === undefined) onExit(spawned, 1, null);
    });
    spawned.on('message', (message: ToKeeper) => {
      lastAlive = Date.now();
      if (message.type === 'started') {
        started = true;
        if (stopRequests > 0) send({ type: 'stop', force: stopRequests > 1 });
      } else if (message.type === 'up') {
        if (!everUp) options.onUp?.();
        everUp = true;
        upSince = Date.now();
      }
    });
    spawned.once('exit', (code, signal) => {
      onExit(spawned, code, signal);
    });
  }


  const onStopSignal = (): void => {
    if (finishing) return;
    stopRequests++;
    if (child && started) {
      send({ type: 'stop', force: stopRequests > 1 });
      return;
    }
    // Between supervisors: start one now; it adopts the daemon and is told to stop once started.
    if (!child) {
      if (respawnTimer) clearTimeout(respawnTimer);
      spawnSupervisor();
    }
  };
  process.on('SIGTERM', onStopSignal);
  process.on('SIGINT', onStopSignal);
  process.on('SIGHUP', () => {
    if (!finishing && started) send({ type: 'hup' });
  });

  spawnSupervisor();
  return new Promise<never>(() => undefined);
}
