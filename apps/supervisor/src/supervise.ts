/**
 * The supervisor process: the keeper's child. It takes the listeners from the keeper
 * (`LISTEN_FDS`), recovers (adopting a live daemon) or cold-starts, serves the trigger
 * socket, runs handoffs, and tells its keeper over the IPC channel when it is up, when it
 * stops, and when it exits to be replaced. If the keeper dies, it exits at once and leaves
 * the daemon serving: the daemon is then the last holder of the listeners, and the next
 * `handoff-supervisor` asks it for them.
 */
import { subscribe } from 'node:diagnostics_channel';
import type { Logger } from 'pino';
import { ErrorCode, changeProgram } from '@handoff/protocol';
import type { DaemonProgram, ProgramChange } from '@handoff/protocol';
import { Supervisor, SupervisorChannels, listenersFromEnv } from '@handoff/supervisor';
import type { HandoffResult, HeldListener, ProbationPolicy, ReloadTarget, SupervisorChannel, SupervisorChannelMessages } from '@handoff/supervisor';
import { configDir, loadConfig, probationMinimum } from './config.js';
import type { Config } from './config.js';
import { describeDrain, drainThrottle } from './drain.js';
import { ConfigError } from './errors.js';
import { healthCheck } from './health.js';
import { runShell } from './hooks.js';
import { ALIVE_EVERY_MS, KeeperEnv, SupervisorExit } from './keeper.js';
import type { ToKeeper, ToSupervisor } from './keeper.js';
import { Metrics } from './metrics.js';
import { SystemdNotifier } from './notify.js';
import { bindTrigger } from './trigger.js';
import type { DrainRequest } from './trigger.js';

/** True when this process is a supervisor started by a keeper. */
export function isKeeperChild(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[KeeperEnv.Pid] !== undefined && typeof process.send === 'function';
}

function tellKeeper(message: ToKeeper): void {
  if (process.connected) process.send?.(message);
}

/** The listeners passed by the keeper, named with the addresses it bound. */
function keeperListeners(): HeldListener[] {
  const described = JSON.parse(process.env[KeeperEnv.Listeners] ?? '[]') as { name: string; address: string; backlog: number }[];
  Reflect.deleteProperty(process.env, KeeperEnv.Listeners);
  return listenersFromEnv().map((l, i) => ({ ...l, address: described[i]?.address ?? l.address, backlog: described[i]?.backlog ?? 511 }));
}

/** One log line per supervisor event; an event's `pid` is a daemon's (the line's own is the supervisor's). */
function logEvents(log: Logger): void {
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
    peerBusy: 'warn',
    sealProgress: 'debug',
    drainProgress: 'info', // throttled, in words (below)
    descriptorsPending: 'info',
    violation: 'warn',
    probation: 'info',
    health: 'debug',
    revert: 'error',
  };
  // A program's environment may hold secrets: the log names its variables only.
  const redacted = (p: DaemonProgram): Record<string, unknown> => ({ command: p.command, args: p.args, cwd: p.cwd, env: Object.keys(p.env) });
  // A draining incumbent reports every second: its progress is logged when what it waits for
  // changes, and at least every 10 s otherwise; the other reports are debug lines.
  let drainShown: { readonly handoffId: string; readonly show: ReturnType<typeof drainThrottle> } | null = null;
  subscribe(SupervisorChannels.drainProgress, (raw) => {
    const { handoffId, ...progress } = raw as SupervisorChannelMessages['drainProgress'];
    if (drainShown?.handoffId !== handoffId) drainShown = { handoffId, show: drainThrottle() };
    const level = drainShown.show(progress) ? levels.drainProgress : 'debug';
    log[level]({ handoffId, ...progress }, `handoff ${handoffId}: draining — ${describeDrain(progress)}`);
  });
  for (const [kind, name] of Object.entries(SupervisorChannels) as [SupervisorChannel, string][]) {
    if (kind === 'drainProgress') continue;
    subscribe(name, (raw) => {
      const message = kind === 'revert' ? { ...(raw as SupervisorChannelMessages['revert']), from: redacted((raw as SupervisorChannelMessages['revert']).from), to: redacted((raw as SupervisorChannelMessages['revert']).to) } : raw;
      const { pid: daemonPid, ...fields } = message as { pid?: number };
      log[levels[kind]](daemonPid === undefined ? fields : { ...fields, daemonPid }, name.slice('handoff:supervisor:'.length));
    });
  }
}

/** The probation policy of a configuration. */
function probationPolicy(config: Config): ProbationPolicy {
  return {
    windowMs: config.probation.windowMs,
    check: config.health ? healthCheck(config.health, configDir(config)) : null,
    intervalMs: config.health?.intervalMs ?? 1_000,
    failures: config.health?.failures ?? 3,
  };
}

/** The whole program of a configuration, as a change that replaces every part of the current one. */
function configuredProgram(config: Config): ProgramChange {
  const d = config.daemon;
  return { command: d.command, args: d.args, env: d.env, cwd: d.cwd, replaceEnv: true };
}

/**
 * What differs between two configurations that only a restart of the binary applies (the
 * listeners, sockets and files it opened at start), as the keys to name.
 */
export function needsRestart(before: Config, after: Config): string[] {
  const differs = (a: unknown, b: unknown): boolean => JSON.stringify(a) !== JSON.stringify(b);
  const keys: [string, unknown, unknown][] = [
    ['[[listeners]]', before.listeners, after.listeners],
    ['[sockets] control', before.controlSocket, after.controlSocket],
    ['[sockets] trigger', before.triggerSocket, after.triggerSocket],
    ['[daemon] data_dir', before.daemon.dataDir, after.daemon.dataDir],
    ['[daemon] successor_nice', before.daemon.successorNice, after.daemon.successorNice],
    ['[daemon] move_connections', before.daemon.moveConnections, after.daemon.moveConnections],
    ['[supervisor] journal', before.journal, after.journal],
    ['[supervisor] pid_file', before.pidFile, after.pidFile],
    ['[supervisor] log_format', before.logFormat, after.logFormat],
    ['[supervisor] log_file', before.logFile, after.logFile],
    ['[supervisor] metrics', before.metrics, after.metrics],
    // The keeper's own copy of the configuration, and the timing the serving daemon was started with.
    ['[hooks] post_stop', before.hooks.postStop, after.hooks.postStop],
    ['[timeouts] shutdown', before.timeouts.shutdownMs, after.timeouts.shutdownMs],
    ['[timeouts] heartbeat', before.timeouts.heartbeatMs, after.timeouts.heartbeatMs],
    ['[timeouts] liveness', before.timeouts.livenessMs, after.timeouts.livenessMs],
  ];
  return keys.filter(([, a, b]) => differs(a, b)).map(([key]) => key);
}

/** Runs the supervisor until it stops (exit 0), fails to start (exit 1), or is replaced. */
export async function runSupervisor(initial: Config, log: Logger): Promise<void> {
  let config = initial;
  const keeperPid = Number(process.env[KeeperEnv.Pid]);
  Reflect.deleteProperty(process.env, KeeperEnv.Pid);
  const fatal = (message: string): never => {
    process.stderr.write(`handoff-supervisor: ${message}\n`);
    process.exit(1);
  };
  let listeners: HeldListener[];
  try {
    listeners = keeperListeners();
  } catch (error) {
    return fatal((error as Error).message);
  }
  const notifier = SystemdNotifier.fromEnv(process.env, { onError: (message) => { log.warn(`systemd notification failed: ${message}`); } });

  const supervisor = new Supervisor({
    listeners,
    daemon: { command: config.daemon.command, args: config.daemon.args, env: config.daemon.env, cwd: config.daemon.cwd },
    controlSocket: config.controlSocket,
    dataDir: config.daemon.dataDir,
    successorNice: config.daemon.successorNice,
    moveConnections: config.daemon.moveConnections,
    journal: config.journal,
    timeouts: config.timeouts,
    restart: config.restart,
    probation: probationPolicy(config),
  });
  const metrics = new Metrics();
  logEvents(log);
  subscribe(SupervisorChannels.probation, (m) => {
    const { outcome } = m as SupervisorChannelMessages['probation'];
    if (outcome !== 'started') metrics.probationEnded(outcome);
  });
  subscribe(SupervisorChannels.revert, (m) => {
    metrics.reverted((m as SupervisorChannelMessages['revert']).how);
  });

  let running: Promise<unknown> | null = null;
  let stopping = false as boolean; // set by shutdown(), from a signal handler
  /** Set once this process exits to be replaced or released: stop requests are then the next supervisor's. */
  let leaving = false as boolean;
  const isStopping = (): boolean => stopping;
  /**
   * A handoff: the pre-handoff check, the handoff, a health check of the new daemon, and its
   * probation (waited for with `wait`). `change` is the program change (by default, the
   * request's); `drainTimeout` and `cutWork` say how the incumbent drains; the answer lines go
   * to `send`.
   */
  const upgrade = async (request: { readonly probation?: number; readonly wait?: boolean } & DrainRequest, change: ProgramChange, send: (line: Record<string, unknown>) => void): Promise<void> => {
    if (leaving || stopping) {
      send({ type: 'error', code: ErrorCode.InProgress, message: leaving ? 'this supervisor is being replaced; ask again in a moment' : 'the supervisor is stopping' });
      return;
    }
    if (running) {
      const status = supervisor.status();
      send({ type: 'error', code: ErrorCode.InProgress, message: `handoff ${status.handoff?.handoffId ?? ''} is in progress (phase ${status.handoff?.phase ?? 'check'}); wait for its outcome` });
      return;
    }
    const minimum = probationMinimum(config.health);
    if (request.probation !== undefined && request.probation > 0 && request.probation < minimum) {
      send({ type: 'error', code: ErrorCode.BadRequest, message: `a probation of ${request.probation} ms is shorter than [health] interval × failures (${minimum} ms): a failing version could pass it; nothing was changed` });
      return;
    }
    // (The supervisor checks this too, but only once the pre-handoff check has run.)
    if (request.drainTimeout !== undefined && request.drainTimeout > config.timeouts.totalMs) {
      send({ type: 'error', code: ErrorCode.BadRequest, message: `a drain timeout of ${request.drainTimeout} ms is longer than a whole handoff may take ([timeouts] total, ${config.timeouts.totalMs} ms); nothing was changed` });
      return;
    }
    const drainMs = request.drainTimeout ?? config.timeouts.drainMs;
    let reloading = false;
    let resolveRun: () => void = () => undefined;
    running = new Promise<void>((r) => {
      resolveRun = r;
    });
    /** The handoff is over (its probation may go on): other requests may come. */
    const release = (): void => {
      if (!running) return;
      running = null;
      resolveRun();
      // (A stop may have begun meanwhile: systemd was told STOPPING=1 then.)
      if (reloading && !isStopping()) void notifier.ready(servingStatus(), keeperPid);
    };
    let probationPid: number | null = null;
    try {
      if (config.hooks.preHandoff) {
        send({ type: 'phase', phase: 'check', elapsedMs: 0 });
        // The check is given exactly the program the handoff will run.
        const next = changeProgram(supervisor.status().program, change);
        const check = await runShell(
          config.hooks.preHandoff,
          { HANDOFF_NEW_COMMAND: next.command, HANDOFF_NEW_ARGS: JSON.stringify(next.args), HANDOFF_NEW_PROGRAM: JSON.stringify(next) },
          config.hooks.preHandoffTimeoutMs,
          configDir(config),
        );
        if (!check.ok) {
          log.warn({ exit: check.code }, 'pre-handoff check failed: the incumbent serves on undisturbed');
          metrics.handoffError();
          send({ type: 'error', code: ErrorCode.CheckFailed, message: `the pre-handoff check failed (exit ${String(check.code)}): ${config.hooks.preHandoff}; nothing was changed`, output: check.output });
          return;
        }
      }
      void notifier.reloading('handing off');
      reloading = true;
      /** This handoff's id, known from its first phase change (a drain follows one). */
      let handoffId = '';
      // systemd's status line changes when what the drain waits for does (at least every 10 s), not on every report.
      const statusDrain = drainThrottle();
      const result: HandoffResult = await supervisor.performHandoff(
        { daemon: change },
        {
          ...(request.probation === undefined ? {} : { probationMs: request.probation }),
          ...(request.drainTimeout === undefined ? {} : { drainTimeoutMs: request.drainTimeout }),
          ...(request.cutWork === true ? { cutWork: true } : {}),
          onPhase: (p) => {
            handoffId = p.handoffId;
            if (stopping) return; // systemd was told STOPPING=1: the phases of this last handoff are the log's
            void notifier.status(`handoff ${p.handoffId}: ${p.to}`);
            // A drain or a seal may run long: tell systemd not to time the reload out meanwhile.
            const longest = p.to === 'preparing' ? drainMs : p.to === 'sealing' ? config.timeouts.sealMs : null;
            if (longest !== null) void notifier.extendTimeout(longest + 5_000);
            send({ type: 'phase', handoffId: p.handoffId, phase: p.to, from: p.from, phaseMs: p.phaseMs, elapsedMs: p.elapsedMs });
          },
          // (The log line is logEvents': one place for every handoff, reverts included.)
          onDrainProgress: (progress) => {
            const id = handoffId || (supervisor.status().handoff?.handoffId ?? '');
            if (!stopping && statusDrain(progress)) void notifier.status(`handoff ${id}: draining — ${describeDrain(progress)}`);
            const { pending, kinds, counts, oldest, oldestMs, leftMs } = progress;
            send({ type: 'drain', handoffId: id, pending, kinds, counts, oldest, oldestMs, leftMs });
          },
        },
      );
      metrics.handoff(result);
      const pid = result.incumbentPid;
      const check = probationPolicy(config).check;
      const health = result.committed && pid !== null && check ? await check(pid) : null;
      log[result.committed && !result.aftermath && health?.ok !== false ? 'info' : 'warn']({ handoffId: result.handoffId, outcome: result.outcome, abortReason: result.abortReason, aftermath: result.aftermath, timings: result.timings, health }, result.committed ? 'handoff committed' : 'handoff rolled back');
      send({ type: 'result', ...result, health });
      // The new version's probation: started, or already over (it died right after the commit point).
      const versions = supervisor.status().versions;
      const newPid = result.committed ? result.successorPid : null;
      if (newPid !== null && versions.probation?.pid === newPid) {
        send({ type: 'probation', outcome: 'started', pid: newPid, ms: versions.probation.endsInMs, lastGood: versions.lastGood });
      }
      if (newPid !== null && (request.wait || versions.lastProbation?.pid === newPid)) probationPid = newPid;
    } catch (error) {
      metrics.handoffError();
      const e = error as { code?: string; message: string };
      send({ type: 'error', code: e.code ?? ErrorCode.Internal, message: e.message });
    } finally {
      release();
    }
    if (probationPid !== null) {
      const end = await supervisor.probationOf(probationPid);
      // ('ended' without a probation: none was configured; nothing to say.)
      if (end.outcome !== 'ended') send({ type: 'probation', pid: probationPid, outcome: end.outcome, reason: end.reason, servingPid: supervisor.status().incumbent?.pid ?? null });
    }
  };

  /**
   * Re-reads the configuration file. An invalid one changes nothing (the error is the answer).
   * A valid one applies at once what can change live (daemon settings, timeouts, restart
   * policy, probation, health, hooks), says what needs a restart of the binary, and hands off
   * to its daemon settings.
   */
  const reload = async (wait: boolean, drain: DrainRequest, send: (line: Record<string, unknown>) => void): Promise<void> => {
    const refusal = cannotHandOff();
    if (refusal !== null) {
      send({ type: 'error', code: ErrorCode.InProgress, message: `${refusal}; nothing was changed — reload again after it` });
      return;
    }
    let next: Config;
    try {
      next = loadConfig(config.source);
    } catch (error) {
      const message = error instanceof ConfigError ? error.message : `${config.source}: ${(error as Error).message}`;
      log.error({ config: config.source }, `reload refused: ${message}`);
      send({ type: 'error', code: ErrorCode.BadRequest, message: `${message}; nothing was changed` });
      return;
    }
    const restartFor = needsRestart(config, next);
    // What only a restart applies keeps its running value: what was bound or opened at start,
    // the keeper's own settings, and the timing the serving daemon was started with.
    const t = config.timeouts;
    config = {
      ...next,
      listeners: config.listeners,
      controlSocket: config.controlSocket,
      triggerSocket: config.triggerSocket,
      journal: config.journal,
      pidFile: config.pidFile,
      logFormat: config.logFormat,
      logFile: config.logFile,
      metrics: config.metrics,
      daemon: { ...next.daemon, dataDir: config.daemon.dataDir },
      timeouts: { ...next.timeouts, heartbeatMs: t.heartbeatMs, livenessMs: t.livenessMs, shutdownMs: t.shutdownMs },
      hooks: { ...next.hooks, postStop: config.hooks.postStop },
    };
    supervisor.reconfigure({ daemon: config.daemon, timeouts: config.timeouts, restart: config.restart, probation: probationPolicy(config) });
    log.info({ config: config.source, needsRestart: restartFor }, 'configuration reloaded: handing off to its daemon settings');
    send({ type: 'reloaded', config: config.source, program: supervisor.configured, needsRestart: restartFor });
    await upgrade({ ...drain, wait }, configuredProgram(config), (line) => {
      // The configuration applies whatever becomes of the handoff: say so with a refusal.
      send(line.type === 'error' ? { ...line, message: `the configuration was applied, but the handoff to its daemon settings did not happen: ${String(line.message)}` } : line);
    });
  };

  /**
   * Reloads one plugin of the daemon, or its own configuration, in place (no handoff), and
   * streams its steps and outcome; the daemon serves on whatever the outcome.
   */
  const reloadInPlace = async (target: ReloadTarget, send: (line: Record<string, unknown>) => void): Promise<void> => {
    const refusal = cannotHandOff();
    if (refusal !== null) {
      send({ type: 'error', code: ErrorCode.InProgress, message: `${refusal}; nothing was changed — reload again after it` });
      return;
    }
    const kind = 'plugin' in target ? 'plugin' : 'config';
    const what = 'plugin' in target ? `plugin ${target.plugin}${target.source ? ` from ${target.source}` : ''}` : 'the daemon\'s configuration';
    log.info({ target }, `reloading ${what} in place`);
    try {
      const result = await supervisor.reload(target, (step) => {
        log.info({ target, phase: step.phase }, `reload: ${step.detail}`);
        send({ type: 'reloadStep', ...step });
      });
      metrics.reload(kind, result.outcome);
      if (result.outcome === 'reloaded') log.info({ ...result }, `reloaded ${what}${result.version ? `: ${result.version} in force` : ''}`);
      else log.warn({ ...result }, `reload of ${what} ${result.outcome}: ${result.error}; the daemon serves on`);
      send({ type: 'reloadDone', ...result });
    } catch (error) {
      metrics.reload(kind, 'error');
      const e = error as { code?: string; message: string };
      log.error({ target, code: e.code }, `reload of ${what} failed: ${e.message}`);
      send({ type: 'error', code: e.code ?? ErrorCode.Internal, message: e.message });
    }
  };

  /** Why no handoff (or reload, or supervisor replacement) can begin now; null when one can. */
  const cannotHandOff = (): string | null => {
    if (stopping) return 'the supervisor is stopping';
    if (leaving) return 'this supervisor is being replaced';
    if (supervisor.reloading !== null) return `a reload of ${supervisor.reloading} is in progress`;
    const s = supervisor.status();
    if (running || s.handoff) return `${s.handoff?.handoffId ? `handoff ${s.handoff.handoffId}` : 'a handoff'} is in progress`;
    if (s.lifecycle === 'failed') return null;
    if (s.lifecycle !== 'serving' || !s.incumbent?.session) return `no daemon serves right now (supervisor ${s.lifecycle})`;
    return null;
  };
  const servingStatus = (): string => {
    const s = supervisor.status();
    return s.incumbent ? `serving: daemon pid ${s.incumbent.pid}, generation ${s.incumbent.generation}` : `${s.lifecycle}: no daemon serves`;
  };

  const triggerRef: { close: () => Promise<void> } = { close: () => Promise.resolve() };
  let metricsAddress: string | null = null;
  const metricsRef: { close: () => void } = { close: () => undefined };
  const shutdown = async (why: string, force = false): Promise<void> => {
    if (leaving) return;
    if (stopping) {
      if (!force) return; // the same stop, heard twice (from the keeper and directly)
      log.error('second stop request: forcing (SIGKILL to the daemon)');
      supervisor.kill();
      process.exit(1);
    }
    stopping = true;
    void notifier.stopping('stopping: the daemon drains and seals');
    void notifier.extendTimeout(config.timeouts.shutdownMs + 5_000);
    log.info({ why }, 'stopping: the daemon drains and seals');
    if (running) await running;
    await supervisor.stop(config.timeouts.shutdownMs);
    await triggerRef.close();
    metricsRef.close();
    await notifier.close();
    log.info('stopped');
    process.exit(SupervisorExit.Stopped);
  };
  const handoffOnHup = (): void => {
    log.info('SIGHUP: reloading the configuration and handing off to it');
    void reload(false, {}, (line) => {
      if (line.type === 'error') log.error(line, 'SIGHUP reload failed');
    });
  };
  // The keeper passes the operator's signals on (a second stop request forces); a signal sent
  // to this process directly (say by pkill, which also reaches the keeper) is one more copy
  // of the same request, never a second one.
  process.on('message', (message: ToSupervisor) => {
    if (message.type === 'stop') void shutdown('stop requested (signal to the keeper)', message.force);
    else handoffOnHup();
  });
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGHUP', handoffOnHup);
  // Without its keeper this process is nobody's: leave the daemon serving (it holds the
  // listeners) for the next handoff-supervisor to adopt, and go.
  process.on('disconnect', () => {
    if (stopping) return;
    log.warn({ keeperPid }, 'the keeper is gone: exiting; the daemon serves on, and the next handoff-supervisor adopts it');
    process.exit(1);
  });
  setInterval(() => {
    tellKeeper({ type: 'alive' });
  }, ALIVE_EVERY_MS).unref();
  tellKeeper({ type: 'started' });

  try {
    await supervisor.start();
  } catch (error) {
    if (stopping) return; // stopped during start-up: shutdown() finishes the stop and exits 0
    fatal((error as Error).message);
  }
  const started = Date.now();
  const serveTrigger = () => bindTrigger(config.triggerSocket, async (request, send) => {
    switch (request.cmd) {
      case 'status': {
        const status = supervisor.status();
        send({
          type: 'status',
          ...status,
          pid: keeperPid,
          supervisorPid: process.pid,
          supervisorUptimeMs: Date.now() - started,
          config: config.source,
          configured: supervisor.configured,
          listeners: listeners.map((l) => ({ name: l.name, address: l.address })),
          metrics: metricsAddress,
        });
        return;
      }
      case 'stop':
        send({ type: 'stopping' });
        setImmediate(() => void shutdown('stop request'));
        return;
      case 'upgrade': {
        const change = { ...(request.command ? { command: request.command } : {}), ...(request.args ? { args: request.args } : {}), ...(request.env ? { env: request.env } : {}) };
        await upgrade(request, change, send);
        return;
      }
      case 'reload':
        if ('plugin' in request) await reloadInPlace({ plugin: request.plugin, ...(request.source ? { source: request.source } : {}) }, send);
        else if ('daemonConfig' in request) await reloadInPlace({ config: true }, send);
        else await reload(request.wait === true, request, send);
        return;
      case 'restart-supervisor':
      case 'release': {
        if (running || stopping || supervisor.status().handoff || supervisor.reloading !== null) {
          send({ type: 'error', code: ErrorCode.InProgress, message: stopping ? 'the supervisor is stopping' : supervisor.reloading !== null ? `a reload of ${supervisor.reloading} is in progress; ask again after its outcome` : 'a handoff is in progress; ask again after its outcome' });
          return;
        }
        // The daemon serves on untouched. After restart-supervisor the keeper starts a fresh
        // supervisor (the code now on disk) at once, and its recovery adopts the daemon; after
        // release the keeper exits too, and the daemon is left holding the listeners.
        const daemonPid = supervisor.status().incumbent?.pid ?? null;
        const replace = request.cmd === 'restart-supervisor';
        leaving = true;
        send({ type: replace ? 'restarting' : 'releasing', supervisorPid: process.pid, keeperPid, daemonPid });
        log.info({ daemonPid }, replace ? 'restarting the supervisor in place: the daemon serves on' : 'releasing the daemon to another supervisor: it serves on');
        setImmediate(() => {
          void triggerRef.close().finally(() => process.exit(replace ? SupervisorExit.Replace : SupervisorExit.Release));
        });
        return;
      }
    }
  });
  try {
    const trigger = await serveTrigger();
    triggerRef.close = () => trigger.close();
    if (config.metrics) {
      const server = await metrics.serve(config.metrics.host, config.metrics.port, () => {
        metrics.status(supervisor.status());
      });
      const bound = server.address() as { address: string; port: number };
      metricsAddress = `http://${bound.address.includes(':') ? `[${bound.address}]` : bound.address}:${bound.port}/metrics`;
      metricsRef.close = () => server.close();
    }
  } catch (error) {
    await triggerRef.close();
    // A daemon this process adopted serves on: exit, and the keeper tries again later.
    if (supervisor.status().incumbent?.adopted === true) return fatal(`${(error as Error).message}; the daemon serves on`);
    // Leave nothing behind: the daemon this process started drains, seals and exits first.
    stopping = true;
    await supervisor.stop(config.timeouts.shutdownMs);
    return fatal(`${(error as Error).message}; the daemon was stopped`);
  }
  tellKeeper({ type: 'up' });
  void notifier.ready(servingStatus(), keeperPid);
  notifier.startWatchdog();
  const status = supervisor.status();
  log.info({ daemonPid: status.incumbent?.pid, keeperPid, listeners: listeners.map((l) => l.address), trigger: config.triggerSocket, config: config.source }, 'serving');
}
