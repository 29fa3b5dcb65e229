#!/usr/bin/env node
/**
 * handoff-supervisor: runs a daemon and replaces its program without dropping a connection
 * or losing a write. See `handoff-supervisor --help` and the README.
 *
 * Exit codes: 0 stopped cleanly; 1 runtime failure; 2 bad usage or configuration;
 * 3 another supervisor owns the pid file.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { pino } from 'pino';
import type { Logger } from 'pino';
import pretty from 'pino-pretty';
import { FieldLimits } from '@handoff/protocol';
import { bindListeners, daemonPresent, listenersFromEnv, requestListenerHolder, selfTestHeldListeners, startListening } from '@handoff/supervisor';
import { isAlive } from '@handoff/supervisor/internal';
import type { HeldListener } from '@handoff/supervisor';
import { ask } from './client.js';
import { configDir, defaultConfig, loadConfig } from './config.js';
import type { Config } from './config.js';
import { AlreadyRunningError, ConfigError } from './errors.js';
import { forceOut } from './force.js';
import type { ForceOutcome } from './force.js';
import { runShell } from './hooks.js';
import { runKeeper } from './keeper.js';
import { PidFile } from './pidfile.js';
import { checkRuntimeDir } from './runtime-dir.js';
import { isKeeperChild, runSupervisor } from './supervise.js';

const program = new Command()
  .name('handoff-supervisor')
  .description('Run a daemon and replace its program with no refused connection and no lost acknowledged write.')
  .option('-c, --config <file>', 'TOML configuration (without it: the example key-value daemon on 127.0.0.1:<port>)')
  .option('-p, --port <port>', 'port of the embedded default', (v) => {
    if (!/^\d+$/.test(v) || Number(v) > 65_535) throw new InvalidArgumentError('expected a port number');
    return Number(v);
  }, 8080)
  .option('-d, --daemon', 'detach, and log to the configured log_file (default: supervisor.log beside the trigger socket)')
  .option('-f, --force', 'take over from a running instance: its daemon serves on and is adopted; one that does not answer is stopped (an outage)')
  .showHelpAfterError()
  .exitOverride((error) => {
    process.exit(error.exitCode === 0 ? 0 : 2);
  });

interface Options {
  readonly config?: string;
  readonly port: number;
  readonly daemon?: boolean;
  readonly force?: boolean;
}

/** Where a keeper started by a daemon (SpawnHolder) sends its output; not passed on. */
const HOLDER_LOG_ENV = 'HANDOFF_HOLDER_LOG';

/** Undoes what this process set up before its keeper runs (the pid file, the listeners it bound): on a stop request or an internal error then. */
let cleanup = (): void => undefined;

function fatal(code: number, message: string): never {
  process.stderr.write(`handoff-supervisor: ${message}\n`);
  process.exit(code);
}

/** `args` without a boolean option: `--long`, `-x`, or `x` inside a cluster of short flags (`-dx` becomes `-x`). */
function without(args: readonly string[], short: string, long: string): string[] {
  return args.flatMap((a) => {
    if (a === long) return [];
    if (!/^-[A-Za-z]+$/.test(a)) return [a];
    const rest = a.slice(1).replaceAll(short, '');
    return rest === '' ? [] : [`-${rest}`];
  });
}

/** Detaches: starts this program again in the background, logging to a file, and waits until it serves. */
async function daemonize(config: Config): Promise<never> {
  const log = config.logFile ?? join(dirname(config.triggerSocket), 'supervisor.log');
  const fd = openSync(log, 'a', 0o640);
  const from = fstatSync(fd).size;
  const [script = '', ...rest] = process.argv.slice(1);
  const args = [script, ...without(rest, 'd', '--daemon')];
  const child = spawn(process.execPath, [...process.execArgv, ...args], { detached: true, stdio: ['ignore', fd, fd], env: { ...process.env, HANDOFF_LOG_FORMAT: 'json' } });
  closeSync(fd);
  child.unref();
  const pid = child.pid ?? 0;
  const state = { exited: false };
  child.once('exit', () => {
    state.exited = true;
  });
  try {
    await waitForKeeper(config, pid, log, () => state.exited, from);
  } catch (error) {
    fatal(1, `the detached ${(error as Error).message.replace(/^the /, '')}`);
  }
  process.stdout.write(`handoff-supervisor running as pid ${pid}; log: ${log}\n`);
  process.exit(0);
}

/**
 * The listeners are in use and a daemon holds the data directory: a previous instance's
 * keeper is gone and its daemon serves on, the last holder of the listeners. Ask it to start
 * this program as its own child with them; that new keeper runs in the background (logging
 * to the log file) and adopts the daemon. No connection is refused.
 */
async function takeOverFromDaemon(config: Config, args: readonly string[], previous: number | null): Promise<never> {
  const log = config.logFile ?? join(dirname(config.triggerSocket), 'supervisor.log');
  const env: Record<string, string> = { HANDOFF_LOG_FORMAT: 'json', [HOLDER_LOG_ENV]: log };
  // This environment, within what SpawnHolder carries (PROTOCOL.md section 6).
  let bytes = 0;
  for (const [k, v] of Object.entries(process.env)) {
    const size = Buffer.byteLength(`${k}=${v ?? ''}`);
    if (v === undefined || k in env || Object.keys(env).length >= FieldLimits.envMax || size > FieldLimits.argMax || bytes + size > 512 * 1024) continue;
    env[k] = v;
    bytes += size;
  }
  const from = existsSync(log) ? statSync(log).size : 0;
  try {
    const { daemonPid, holderPid } = await requestListenerHolder({
      controlSocket: config.controlSocket,
      dataDir: config.daemon.dataDir,
      // The shell sends the new keeper's output to the log file, then execs it (same pid).
      argv: ['/bin/sh', '-c', `exec "$0" "$@" >>"$${HOLDER_LOG_ENV}" 2>&1`, process.execPath, ...process.execArgv, process.argv[1] ?? '', ...args],
      cwd: process.cwd(),
      env,
      timeoutMs: config.timeouts.livenessMs + 15_000,
    });
    await waitForKeeper(config, holderPid, log, undefined, from);
    const how = previous === null ? `the daemon (pid ${daemonPid}) was serving without a supervisor` : `took over from pid ${previous}: the daemon (pid ${daemonPid}) served throughout`;
    process.stdout.write(`handoff-supervisor: ${how}; it passed the listeners to a new supervisor, running in the background as pid ${holderPid}; log: ${log}\n`);
    process.exit(0);
  } catch (error) {
    return fatal(1, `the listeners are in use by the daemon serving ${config.daemon.dataDir ?? config.controlSocket}, and taking it over failed: ${(error as Error).message}`);
  }
}

/** Waits until the keeper `pid` answers on the trigger socket; fails with the log's tail if it exits or takes 30 s. */
async function waitForKeeper(config: Config, pid: number, log: string, exited: () => boolean = () => !isAlive(pid), from = 0): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && !exited()) {
    try {
      const [status] = await ask(config.triggerSocket, { cmd: 'status' });
      if (status?.type === 'status' && status.pid === pid) return;
    } catch {
      // not up yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  // Only what this start wrote (the log file keeps earlier runs).
  const tail = existsSync(log) ? readFileSync(log).subarray(from).toString('utf8').split('\n').slice(-20).join('\n') : '';
  // It failed to start with one line saying why (a bad listener address, a pid file's missing directory): that line.
  const said = /^handoff-supervisor: ([^\n]*)\n*$/.exec(tail);
  if (said && exited()) throw new Error(`the supervisor (pid ${pid}) exited: ${said[1] ?? ''} (log: ${log})`);
  throw new Error(`the supervisor (pid ${pid}) ${exited() ? 'exited' : 'did not start within 30 s'}; last lines of ${log}:\n${tail}`);
}

function makeLogger(config: Config): Logger {
  const format = process.env.HANDOFF_LOG_FORMAT ?? config.logFormat;
  const json = format === 'json' || (format === 'auto' && !process.stdout.isTTY);
  const options = { name: 'handoff-supervisor', base: { pid: process.pid } };
  return json ? pino(options) : pino(options, pretty({ colorize: process.stdout.isTTY, sync: true, ignore: 'name,hostname' }));
}

async function main(): Promise<void> {
  program.parse();
  const opts = program.opts<Options>();
  let config: Config;
  try {
    config = opts.config ? loadConfig(opts.config) : defaultConfig(opts.port);
  } catch (error) {
    if (error instanceof ConfigError) fatal(2, error.message);
    throw error;
  }
  const log = makeLogger(config);
  if (isKeeperChild()) {
    await runSupervisor(config, log);
    return;
  }
  try {
    checkRuntimeDir(dirname(config.triggerSocket), "the trigger socket's directory");
    if (dirname(config.controlSocket) !== dirname(config.triggerSocket)) checkRuntimeDir(dirname(config.controlSocket), "the control socket's directory");
  } catch (error) {
    if (error instanceof ConfigError) fatal(2, error.message);
    throw error;
  }
  if (opts.daemon) {
    const owner = opts.force ? null : PidFile.liveOwner(config.pidFile);
    if (owner !== null) fatal(3, `another handoff supervisor is running (pid ${owner}, pid file ${config.pidFile}); stop it with "handoffctl stop", or start this one with --force to take over`);
    await daemonize(config);
  }
  Reflect.deleteProperty(process.env, HOLDER_LOG_ENV);
  // Until the keeper runs its supervisor, a stop request ends this process: nothing runs yet.
  const early = (): void => {
    cleanup();
    process.exit(0);
  };
  process.once('SIGTERM', early);
  process.once('SIGINT', early);
  let pidFile: PidFile;
  let forced: ForceOutcome | null = null;
  try {
    try {
      pidFile = PidFile.acquire(config.pidFile);
    } catch (error) {
      if (!(error instanceof AlreadyRunningError) || !opts.force) throw error;
      forced = await forceOut(config, error.pid);
      pidFile = PidFile.acquire(config.pidFile);
    }
  } catch (error) {
    if (error instanceof AlreadyRunningError) fatal(3, error.message);
    fatal(1, (error as Error).message);
  }
  cleanup = () => {
    pidFile.release();
  };
  if (forced?.kind === 'released') log.info({ previous: forced.pid, daemonPid: forced.daemonPid }, '--force: the previous instance released its daemon, which serves on; taking it over');
  if (forced?.kind === 'stopped') {
    process.stderr.write(`handoff-supervisor: --force: the previous instance (pid ${forced.pid}) was stopped because ${forced.why}: its processes (${forced.stopped.join(', ')}) got SIGTERM (keeper and daemon) and SIGCONT${forced.killed.length ? `, then ${forced.killed.join(', ')} SIGKILL` : ''}; connections are refused until the new daemon listens\n`);
  }

  // The supervisors this keeper starts read the same configuration (the embedded default's file, too).
  const childArgs = [...without(without(process.argv.slice(2), 'd', '--daemon'), 'f', '--force'), ...(opts.config ? [] : ['--config', config.source])];
  // The listeners: from systemd (or a daemon that started this keeper), else bound here and
  // put in LISTEN at once, so that connections queue from now on.
  let listeners: HeldListener[];
  let closeListeners = (): void => undefined;
  try {
    listeners = listenersFromEnv().map((l) => ({ ...l, backlog: config.listeners.find((x) => x.name === l.name)?.backlog ?? 511 }));
    if (listeners.length === 0) {
      selfTestHeldListeners();
      const held = bindListeners(config.listeners);
      listeners = held.listeners;
      closeListeners = () => {
        held.close();
      };
      cleanup = () => {
        held.close();
        pidFile.release();
      };
    }
    // In LISTEN from now on (passed ones already are: that sets their backlog), named by their real address.
    const addresses = startListening(listeners);
    listeners = listeners.map((l, i) => ({ ...l, address: addresses[i] ?? l.address }));
  } catch (error) {
    closeListeners();
    pidFile.release();
    if (/EADDRINUSE/.test((error as Error).message) && daemonPresent(config.daemon.dataDir, config.controlSocket)) await takeOverFromDaemon(config, childArgs, forced?.kind === 'released' ? forced.pid : null);
    fatal(1, (error as Error).message);
  }
  if (config.hooks.preStart) {
    const r = await runShell(config.hooks.preStart, {}, config.hooks.preHandoffTimeoutMs, configDir(config));
    if (!r.ok) {
      closeListeners();
      pidFile.release();
      fatal(1, `the pre_start hook failed (${r.code === null ? 'no exit code' : `exit ${r.code}`}): ${config.hooks.preStart}\n${r.output}`);
    }
  }

  const since = forced?.kind === 'stopped' ? forced.since : null;
  const onUp = since === null ? undefined : () => {
    process.stderr.write(`handoff-supervisor: --force: serving again; the outage lasted ${Date.now() - since} ms (from stopping the previous instance until the new one was up)\n`);
  };
  process.off('SIGTERM', early);
  process.off('SIGINT', early);
  await runKeeper({ config, log, pidFile, listeners, closeListeners, args: childArgs, ...(onUp ? { onUp } : {}) });
}

main().catch((error: unknown) => {
  cleanup();
  fatal(1, `internal error: ${(error as Error).stack ?? String(error)}`);
});
