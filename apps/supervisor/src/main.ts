#!/usr/bin/env node
/**
 * handoff-supervisor: runs a daemon and replaces its program without dropping a connection
 * or losing a write. See `handoff-supervisor --help` and the README.
 *
 * Exit codes: 0 stopped cleanly; 1 runtime failure; 2 bad usage or configuration;
 * 3 another supervisor owns the pid file.
 */
import { execFile, spawn } from 'node:child_process';
import { subscribe } from 'node:diagnostics_channel';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { pino } from 'pino';
import type { Logger } from 'pino';
import pretty from 'pino-pretty';
import { ErrorCode, changeProgram } from '@handoff/protocol';
import { Supervisor, SupervisorChannels, bindListeners, listenerAddress, listenersFromEnv, selfTestHeldListeners } from '@handoff/supervisor';
import type { HandoffRequest, HandoffResult, HeldListener, SupervisorChannel } from '@handoff/supervisor';
import { ask } from './client.js';
import { defaultConfig, loadConfig } from './config.js';
import type { Config } from './config.js';
import { AlreadyRunningError, ConfigError } from './errors.js';
import { Metrics } from './metrics.js';
import { PidFile } from './pidfile.js';
import { bindTrigger } from './trigger.js';
import type { TriggerRequest } from './trigger.js';

const program = new Command()
  .name('handoff-supervisor')
  .description('Run a daemon and replace its program with no refused connection and no lost acknowledged write.')
  .option('-c, --config <file>', 'TOML configuration (without it: the example key-value daemon on 127.0.0.1:<port>)')
  .option('-p, --port <port>', 'port of the embedded default', (v) => {
    if (!/^\d+$/.test(v) || Number(v) > 65_535) throw new InvalidArgumentError('expected a port number');
    return Number(v);
  }, 8080)
  .option('-d, --daemon', 'detach, and log to the configured log_file (default: supervisor.log beside the trigger socket)')
  .option('-f, --force', 'stop a running supervisor that owns the pid file and take over')
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

function fatal(code: number, message: string): never {
  process.stderr.write(`handoff-supervisor: ${message}\n`);
  process.exit(code);
}

function runShell(command: string, env: Record<string, string>, timeoutMs: number): Promise<{ ok: boolean; output: string; code: number | null }> {
  return new Promise((resolve) => {
    execFile('/bin/sh', ['-c', command], { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 1024 * 1024 }, (error, stdout, stderr) => {
      const output = `${stdout}${stderr}`.slice(-64 * 1024);
      resolve({ ok: error === null, output, code: error ? (typeof error.code === 'number' ? error.code : null) : 0 });
    });
  });
}

function probe(url: string, timeoutMs: number): Promise<{ ok: boolean; status: number | null; error?: string }> {
  return new Promise((resolve) => {
    const req = request(url, { timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      res.on('end', () => {
        resolve({ ok: (res.statusCode ?? 0) < 400, status: res.statusCode ?? null });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e) => {
      resolve({ ok: false, status: null, error: e.message });
    });
    req.end();
  });
}

/** Detaches: starts this program again in the background, logging to a file, and waits until it serves. */
async function daemonize(config: Config): Promise<never> {
  const log = config.logFile ?? join(dirname(config.triggerSocket), 'supervisor.log');
  const fd = openSync(log, 'a', 0o640);
  const args = process.argv.slice(1).filter((a) => a !== '-d' && a !== '--daemon');
  const child = spawn(process.execPath, [...process.execArgv, ...args], { detached: true, stdio: ['ignore', fd, fd], env: { ...process.env, HANDOFF_LOG_FORMAT: 'json' } });
  closeSync(fd);
  child.unref();
  const pid = child.pid ?? 0;
  const state = { exited: false };
  child.once('exit', () => {
    state.exited = true;
  });
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && !state.exited) {
    try {
      const [status] = await ask(config.triggerSocket, { cmd: 'status' });
      if (status?.type === 'status' && status.pid === pid) {
        process.stdout.write(`handoff-supervisor running as pid ${pid}; log: ${log}\n`);
        process.exit(0);
      }
    } catch {
      // not up yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const tail = existsSync(log) ? readFileSync(log, 'utf8').split('\n').slice(-20).join('\n') : '';
  fatal(1, `the detached supervisor (pid ${pid}) ${state.exited ? 'exited' : 'did not start within 30 s'}; last lines of ${log}:\n${tail}`);
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
  if (opts.daemon) await daemonize(config);

  const log = makeLogger(config);
  let pidFile: PidFile;
  try {
    pidFile = await PidFile.acquire(config.pidFile, { force: opts.force ?? false, graceMs: config.timeouts.shutdownMs });
  } catch (error) {
    if (error instanceof AlreadyRunningError) fatal(3, error.message);
    fatal(1, (error as Error).message);
  }
  if (pidFile.replaced !== null) log.warn({ replaced: pidFile.replaced }, 'stopped the previous supervisor (--force) and took over');

  if (config.hooks.preStart) {
    const r = await runShell(config.hooks.preStart, {}, config.hooks.preHandoffTimeoutMs);
    if (!r.ok) {
      pidFile.release();
      fatal(1, `the pre_start hook failed (exit ${String(r.code)}): ${config.hooks.preStart}\n${r.output}`);
    }
  }

  let listeners: HeldListener[];
  let closeListeners = (): void => undefined;
  try {
    listeners = listenersFromEnv();
  } catch (error) {
    pidFile.release();
    fatal(1, (error as Error).message);
  }
  if (listeners.length === 0) {
    try {
      selfTestHeldListeners();
      const held = bindListeners(config.listeners);
      listeners = held.listeners;
      closeListeners = () => {
        held.close();
      };
    } catch (error) {
      pidFile.release();
      fatal(1, (error as Error).message);
    }
  } else {
    // From systemd or a holder: the configured address and backlog of each, by name.
    listeners = listeners.map((l) => {
      const c = config.listeners.find((x) => x.name === l.name);
      return { ...l, backlog: c?.backlog ?? 511, ...(c ? { address: listenerAddress(c) } : {}) };
    });
  }

  const supervisor = new Supervisor({
    listeners,
    daemon: { command: config.daemon.command, args: config.daemon.args, env: config.daemon.env, cwd: config.daemon.cwd },
    controlSocket: config.controlSocket,
    dataDir: config.daemon.dataDir,
    journal: config.journal,
    timeouts: config.timeouts,
    restart: config.restart,
  });
  const metrics = new Metrics();
  // One log line per supervisor event; an event's `pid` is a daemon's (the line's own is the supervisor's).
  const levels: Record<SupervisorChannel, 'error' | 'warn' | 'info' | 'debug'> = {
    phase: 'debug',
    handoff: 'info',
    recovered: 'info',
    journalError: 'warn',
    coldStart: 'info',
    daemonServing: 'info',
    daemonExited: 'info',
    sessionClosed: 'info',
    sessionRefused: 'debug',
    restart: 'warn',
    gaveUp: 'error',
    sealProgress: 'debug',
    violation: 'warn',
  };
  for (const [kind, name] of Object.entries(SupervisorChannels) as [SupervisorChannel, string][]) {
    subscribe(name, (message) => {
      const { pid: daemonPid, ...fields } = message as { pid?: number };
      log[levels[kind]](daemonPid === undefined ? fields : { ...fields, daemonPid }, name.slice('handoff:supervisor:'.length));
    });
  }

  let running: Promise<unknown> | null = null;
  /** A handoff: the pre-handoff check, the handoff, the health probe. */
  const upgrade = async (request: Extract<TriggerRequest, { cmd: 'upgrade' }>, send: (line: Record<string, unknown>) => void): Promise<void> => {
    if (running) {
      const status = supervisor.status();
      send({ type: 'error', code: ErrorCode.InProgress, message: `handoff ${status.handoff?.handoffId ?? ''} is in progress (phase ${status.handoff?.phase ?? 'check'}); wait for its outcome` });
      return;
    }
    const change = { ...(request.command ? { command: request.command } : {}), ...(request.args ? { args: request.args } : {}), ...(request.env ? { env: request.env } : {}) };
    const handoffRequest: HandoffRequest = { daemon: change };
    let resolveRun: () => void = () => undefined;
    running = new Promise<void>((r) => {
      resolveRun = r;
    });
    try {
      if (config.hooks.preHandoff) {
        send({ type: 'phase', phase: 'check', elapsedMs: 0 });
        // The check is given the program the handoff will run.
        const next = changeProgram(supervisor.status().program, change);
        const check = await runShell(config.hooks.preHandoff, { HANDOFF_NEW_COMMAND: next.command, HANDOFF_NEW_ARGS: JSON.stringify(next.args) }, config.hooks.preHandoffTimeoutMs);
        if (!check.ok) {
          log.warn({ exit: check.code }, 'pre-handoff check failed: the incumbent serves on undisturbed');
          metrics.handoffError();
          send({ type: 'error', code: ErrorCode.CheckFailed, message: `the pre-handoff check failed (exit ${String(check.code)}): ${config.hooks.preHandoff}; nothing was changed`, output: check.output });
          return;
        }
      }
      const result: HandoffResult = await supervisor.performHandoff(handoffRequest, {
        onPhase: (p) => {
          send({ type: 'phase', handoffId: p.handoffId, phase: p.to, from: p.from, phaseMs: p.phaseMs, elapsedMs: p.elapsedMs });
        },
      });
      metrics.handoff(result);
      const health = result.committed && result.incumbentPid !== null && config.health ? await probe(config.health.url, config.health.timeoutMs) : null;
      log[result.committed && !result.aftermath ? 'info' : 'warn']({ handoffId: result.handoffId, outcome: result.outcome, abortReason: result.abortReason, aftermath: result.aftermath, timings: result.timings, health }, result.committed ? 'handoff committed' : 'handoff rolled back');
      send({ type: 'result', ...result, health });
    } catch (error) {
      metrics.handoffError();
      const e = error as { code?: string; message: string };
      send({ type: 'error', code: e.code ?? ErrorCode.Internal, message: e.message });
    } finally {
      running = null;
      resolveRun();
    }
  };

  let stopping = false as boolean; // set by shutdown(), from a signal handler
  const triggerRef: { close: () => Promise<void> } = { close: () => Promise.resolve() };
  let metricsAddress: string | null = null;
  const metricsRef: { close: () => void } = { close: () => undefined };
  const shutdown = async (why: string): Promise<void> => {
    if (stopping) {
      log.error('second stop request: forcing (SIGKILL to the daemon)');
      supervisor.kill();
      pidFile.release();
      process.exit(1);
    }
    stopping = true;
    log.info({ why }, 'stopping: the daemon drains and seals');
    if (running) await running;
    await supervisor.stop(config.timeouts.shutdownMs);
    await triggerRef.close();
    metricsRef.close();
    closeListeners();
    if (config.hooks.postStop) {
      const r = await runShell(config.hooks.postStop, {}, config.hooks.preHandoffTimeoutMs);
      if (!r.ok) log.error({ exit: r.code, output: r.output }, 'the post_stop hook failed');
    }
    pidFile.release();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    log.info('SIGHUP: handing off to the configured command');
    void upgrade({ cmd: 'upgrade' }, (line) => {
      if (line.type === 'error') log.error(line, 'SIGHUP handoff failed');
    });
  });

  try {
    await supervisor.start();
  } catch (error) {
    if (stopping) return; // stopped during start-up: shutdown() finishes the stop and exits 0
    closeListeners();
    pidFile.release();
    fatal(1, (error as Error).message);
  }
  const started = Date.now();
  const trigger = await bindTrigger(config.triggerSocket, async (request, send) => {
    switch (request.cmd) {
      case 'status': {
        const status = supervisor.status();
        send({
          type: 'status',
          ...status,
          supervisorUptimeMs: Date.now() - started,
          config: config.source,
          listeners: listeners.map((l) => ({ name: l.name, address: l.address })),
          metrics: metricsAddress,
        });
        return;
      }
      case 'stop':
        send({ type: 'stopping' });
        setImmediate(() => void shutdown('stop request'));
        return;
      case 'upgrade':
        await upgrade(request, send);
        return;
    }
  }).catch(async (error: unknown) => {
    // Leave nothing behind: the daemon drains, seals and exits before this process does.
    await supervisor.stop(config.timeouts.shutdownMs);
    closeListeners();
    pidFile.release();
    return fatal(1, `${(error as Error).message}; the daemon was stopped`);
  });
  triggerRef.close = () => trigger.close();
  if (config.metrics) {
    const server = await metrics.serve(config.metrics.host, config.metrics.port, () => {
      metrics.status(supervisor.status());
    });
    const bound = server.address() as { address: string; port: number };
    metricsAddress = `http://${bound.address.includes(':') ? `[${bound.address}]` : bound.address}:${bound.port}/metrics`;
    metricsRef.close = () => server.close();
  }
  const status = supervisor.status();
  log.info({ daemonPid: status.incumbent?.pid, listeners: listeners.map((l) => l.address), trigger: config.triggerSocket, config: config.source }, 'serving');
}

main().catch((error: unknown) => {
  fatal(1, `internal error: ${(error as Error).stack ?? String(error)}`);
});
