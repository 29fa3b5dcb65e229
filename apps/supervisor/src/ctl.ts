#!/usr/bin/env node
/**
 * handoffctl: the control client of handoff-supervisor.
 *
 *   handoffctl [--socket path | --config file] upgrade [--command cmd] [--arg a]... [--env K=V]... [--probation ms]
 *              [--drain-timeout duration] [--no-drain-wait] [--wait] [--json]
 *   handoffctl ... reload [--drain-timeout duration] [--no-drain-wait] [--wait] [--json]
 *   handoffctl ... reload <plugin> [--from file] [--json]       (in place, no handoff)
 *   handoffctl ... reload --daemon-config [--json]              (in place, no handoff)
 *   handoffctl ... status [--json]
 *   handoffctl ... stop [--no-wait]
 *   handoffctl ... restart-supervisor
 *
 * Exit codes: 0 committed (or done; with --wait, through its probation; a reload in place:
 * reloaded); 2 rolled back (the old version serves on), or with --wait reverted on probation
 * (the last known good version serves again) or failed it, or a reload in place that failed
 * or was rolled back (the daemon serves on with what it had); 1 error (nothing changed:
 * unreachable, in progress, pre-handoff check failed, invalid configuration, bad request;
 * or a reload in place whose outcome is unknown, which the message says).
 *
 * While the old version drains, what it still waits for is shown as it changes (and at least
 * every 10 s): `draining: waiting for 2 jobs, 1 connection — oldest job 17: export (95 s) — 45 s left`.
 */
import { resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { ask } from './client.js';
import type { Answer } from './client.js';
import { triggerSocketOf } from './config.js';
import { asDrainProgress, describeDrain, drainThrottle, parseDuration } from './drain.js';
import { ConfigError } from './errors.js';
import { sameProgram } from '@handoff/protocol';
import type { DaemonProgram } from '@handoff/protocol';
import { ENV_NAME, MAX_DRAIN_TIMEOUT_MS } from './trigger.js';
import type { DrainRequest, TriggerRequest } from './trigger.js';

const program = new Command()
  .name('handoffctl')
  .description('Control a running handoff-supervisor through its trigger socket.')
  .option('-s, --socket <path>', 'the trigger socket')
  .option('-c, --config <file>', "take the trigger socket from the supervisor's configuration")
  .showHelpAfterError()
  .exitOverride((error) => {
    process.exit(error.exitCode === 0 ? 0 : 1);
  });

function socketPath(): string {
  const o = program.opts<{ socket?: string; config?: string }>();
  if (o.socket) return o.socket;
  if (o.config) {
    try {
      const { socket, problem } = triggerSocketOf(o.config);
      // The running supervisor is unaffected by an invalid file until a reload: still reach it.
      if (problem) process.stderr.write(`handoffctl: warning: ${problem}\nhandoffctl: (the supervisor reads the file only at start and on reload; using the trigger socket it names, ${socket})\n`);
      return socket;
    } catch (error) {
      if (error instanceof ConfigError) fail(`${error.message} (the running supervisor is unaffected; --socket <path> reaches it)`);
      throw error;
    }
  }
  fail('give the trigger socket with --socket <path>, or the configuration with --config <file>');
}

function fail(message: string): never {
  process.stderr.write(`handoffctl: ${message}\n`);
  process.exit(1);
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

const SECRET = /SECRET|TOKEN|PASS|KEY|CREDENTIAL|AUTH|PRIVATE/i;

/** A program as one line: the command and its arguments, the environment it sets, the working directory. */
function isProgram(p: unknown): p is DaemonProgram {
  const x = p as Partial<DaemonProgram> | null;
  return typeof x?.command === 'string' && Array.isArray(x.args) && typeof x.env === 'object';
}

function describeProgram(p: unknown): string {
  const prog = p as { command?: unknown; args?: unknown; env?: unknown; cwd?: unknown } | null | undefined;
  if (typeof prog?.command !== 'string') return '?';
  const args = Array.isArray(prog.args) ? prog.args.map(String) : [];
  // Values of variables whose names say they are secret are not shown.
  const env = typeof prog.env === 'object' && prog.env !== null ? Object.entries(prog.env as Record<string, unknown>).map(([k, v]) => `${k}=${SECRET.test(k) ? '…' : String(v)}`) : [];
  const where = [...(typeof prog.cwd === 'string' ? [`in ${prog.cwd}`] : []), ...(env.length ? [`env ${env.join(' ')}`] : [])];
  return `${[prog.command, ...args].join(' ')}${where.length ? ` (${where.join('; ')})` : ''}`;
}

/** A handoff's result in words; `past` for the last handoff in a status, where who serves now is said elsewhere. */
function describeResult(r: Answer, past = false): string {
  const timings = (r.timings ?? { totalMs: 0, phases: {} }) as { totalMs: number; phases: Record<string, number> };
  const phases = Object.entries(timings.phases).map(([p, ms]) => `${p} ${ms} ms`).join(', ');
  const serving = typeof r.incumbentPid === 'number' ? (past ? `pid ${r.incumbentPid} served after it` : `now serving pid ${r.incumbentPid}`) : past ? 'no daemon served right after it' : 'no daemon serves yet';
  const aftermath = typeof r.aftermath === 'string' ? `\nafter the handoff: ${r.aftermath}` : '';
  const h = r.health as { ok: boolean; detail: string } | null | undefined;
  const health = h ? `\nhealth: ${h.ok ? 'ok' : 'FAILING'} — ${h.detail}` : '';
  const d = r.drained as { openConnsRemaining?: unknown; workCut?: unknown; connsOffered?: unknown } | null | undefined;
  const unfinished = [
    ...(typeof d?.workCut === 'number' && d.workCut > 0 ? [`cut ${d.workCut} tracked item${d.workCut === 1 ? '' : 's'} of long-lived work`] : []),
    ...(typeof d?.openConnsRemaining === 'number' && d.openConnsRemaining > 0 ? [`closed ${d.openConnsRemaining} connection${d.openConnsRemaining === 1 ? '' : 's'} unfinished`] : []),
  ];
  const drain = unfinished.length > 0 ? `\nthe drain ${unfinished.join(' and ')} (the old daemon's log names them)` : '';
  const offered = typeof d?.connsOffered === 'number' && d.connsOffered > 0 ? d.connsOffered : 0;
  const plural = offered === 1 ? '' : 's';
  // Offered connections moved if the handoff committed; after a rollback the old daemon kept them.
  const moved =
    offered === 0
      ? ''
      : r.committed !== true
        ? `\nthe old daemon kept the ${offered} connection${plural} it had offered`
        : typeof r.incumbentPid === 'number'
          ? `\nmoved ${offered} idle connection${plural} to the new daemon (its clients stay connected)`
          : `\nthe ${offered} idle connection${plural} moved to the new daemon closed with it`;
  if (r.outcome === 'coldStart' && r.committed === true && typeof r.handoffId === 'string' && r.handoffId.startsWith('start-')) return `started: no daemon served, so the supervisor started one; ${serving}${health}`;
  const how = r.outcome === 'committed' ? '' : ` (${String(r.outcome)})`;
  if (r.committed === true) return `committed: handoff ${String(r.handoffId)}${how} in ${timings.totalMs} ms — ${phases}; ${serving}${drain}${aftermath}${moved}${health}`;
  const abort = r.abortReason as { code: string; reason: string } | null;
  const who = typeof r.incumbentPid === 'number' ? (past ? `the previous version (pid ${r.incumbentPid}) served on` : `the previous version serves on (pid ${r.incumbentPid})`) : past ? 'no daemon served right after it' : 'no daemon serves yet';
  const said = typeof r.successorOutput === 'string' ? `\nthe new daemon's last output:\n${r.successorOutput.split('\n').slice(-20).map((l) => `  | ${l}`).join('\n')}` : '';
  return `rolled back: handoff ${String(r.handoffId)} — ${abort ? `${abort.code}: ${abort.reason}` : 'no reason given'}; ${who}${drain}${aftermath}${moved}${said}`;
}

/** A probation line of an upgrade's answer. */
function describeProbation(a: Answer): string {
  const s = (ms: unknown): string => `${Math.round(Number(ms) / 1000)} s`;
  switch (a.outcome) {
    case 'started':
      return `probation: pid ${String(a.pid)} is watched for ${s(a.ms)}; ${a.lastGood ? `if it dies or fails its health check, the supervisor hands back to ${describeProgram(a.lastGood)}` : 'no known-good version to hand back to'}`;
    case 'passed':
      return `probation passed: pid ${String(a.pid)} is now the last known good version`;
    case 'reverted':
      return `reverted: ${String(a.reason)}; ${typeof a.servingPid === 'number' ? `the last known good version serves again (pid ${a.servingPid})` : 'the last known good version is being started'}`;
    case 'failed':
      return `probation failed: ${String(a.reason)}`;
    default:
      return `probation ended: ${String(a.reason)}`;
  }
}

function parseMs(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 86_400_000) throw new InvalidArgumentError(`expected a number of milliseconds from 0 to 86400000, got ${JSON.stringify(value)}`);
  return n;
}

function parseDrainTimeout(value: string): number {
  const ms = parseDuration(value, MAX_DRAIN_TIMEOUT_MS);
  if (ms === null) throw new InvalidArgumentError(`expected a duration from 1 ms to 24 h such as 45s, 2m, 1500ms or plain milliseconds, got ${JSON.stringify(value)}`);
  return ms;
}

/** The drain fields of a request from the options `--drain-timeout` and `--no-drain-wait`. */
function drainOf(o: { drainTimeout?: number; drainWait?: boolean }): DrainRequest {
  return { ...(o.drainTimeout === undefined ? {} : { drainTimeout: o.drainTimeout }), ...(o.drainWait === false ? { cutWork: true } : {}) };
}

function parseEnv(value: string, previous: Record<string, string>): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0 || !ENV_NAME.test(value.slice(0, eq))) throw new InvalidArgumentError(`expected NAME=value, got ${JSON.stringify(value)}`);
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

/**
 * Sends a request that hands off and streams its answer: phases, the result, and probation
 * lines; exits with the documented code.
 */
async function streamHandoff(request: TriggerRequest, o: { json?: boolean; wait?: boolean }): Promise<never> {
  const tty = process.stderr.isTTY && !o.json;
  let spin = 0;
  let current = 'starting';
  const started = Date.now();
  const timer = tty
    ? setInterval(() => {
        process.stderr.write(`\r${SPINNER[spin++ % SPINNER.length] ?? ''} ${current}  ${Date.now() - started} ms   `);
      }, 80)
    : undefined;
  const say = (line: string): void => {
    if (tty) process.stderr.write(`\r${' '.repeat(60)}\r`);
    process.stdout.write(`${line}\n`);
  };
  // A drain reports every second or so: a line when what it waits for changes, and at least every 10 s.
  const showDrain = drainThrottle();
  /** Stops the progress display, so that what follows starts on a line of its own. */
  const endProgress = (): void => {
    clearInterval(timer);
    if (tty) process.stderr.write(`\r${' '.repeat(60)}\r`);
  };
  let lastPhase = null as string | null; // set by the answer callback
  const answers = await ask(socketPath(), request, (a) => {
    if (a.type === 'phase') lastPhase = String(a.phase);
    if (o.json) {
      process.stdout.write(`${JSON.stringify(a)}\n`);
      return;
    }
    if (a.type === 'phase') {
      // A phase line closes the phase it came from: show that phase with the time it took.
      const took = typeof a.from === 'string' && typeof a.phaseMs === 'number' ? `${a.from} ${a.phaseMs} ms → ` : '';
      const line = `${took}${String(a.phase)}`;
      current = String(a.phase);
      if (tty) process.stderr.write(`\r✓ ${line}${' '.repeat(20)}\n`);
      else process.stdout.write(`phase ${line}\n`);
    } else if (a.type === 'reloaded') {
      const restart = Array.isArray(a.needsRestart) && a.needsRestart.length > 0 ? `; needs a restart of handoff-supervisor to apply: ${a.needsRestart.join(', ')}` : '';
      say(`reloaded ${String(a.config)}: handing off to ${describeProgram(a.program)}${restart}`);
    } else if (a.type === 'result') {
      say(describeResult(a));
      if (a.committed === true) current = 'on probation';
    } else if (a.type === 'probation') {
      say(describeProbation(a));
    } else if (a.type === 'drain') {
      const progress = asDrainProgress(a);
      if (progress === null) return;
      current = `draining, ${progress.pending} pending`;
      if (showDrain(progress)) say(`draining: ${describeDrain(progress)}`);
    }
  }).catch((error: unknown) => {
    endProgress();
    return fail(`${(error as Error).message}${lastPhase ? ` (the handoff had reached phase ${lastPhase})` : ''}`);
  });
  endProgress();
  const result = answers.find((a) => a.type === 'result');
  const error = answers.find((a) => a.type === 'error');
  if (error) {
    const message = typeof error.message === 'string' ? error.message : 'the supervisor answered an error without a message; check its log';
    if (!o.json) process.stderr.write(`handoffctl: ${typeof error.code === 'string' ? `${error.code}: ` : ''}${message}\n${typeof error.output === 'string' && error.output ? `--- output ---\n${error.output}\n` : ''}`);
    process.exit(1);
  }
  if (!result) {
    fail(`the supervisor closed the connection before the outcome${lastPhase ? ` (last phase: ${lastPhase})` : ''}; did it die? check its log, then "handoffctl status"`);
  }
  if (result.committed !== true) process.exit(2);
  if (o.wait) {
    const probation = answers.filter((a) => a.type === 'probation');
    const end = probation.at(-1);
    if (end?.outcome === 'started') {
      fail(`the supervisor closed the connection during the probation of pid ${String(end.pid)}: its outcome is unknown here (a restarted supervisor goes on watching it); see "handoffctl status"`);
    }
    if (end?.outcome === 'reverted' || end?.outcome === 'failed') process.exit(2);
  }
  process.exit(0);
}

program
  .command('upgrade')
  .description('hand off to a new program and wait for the outcome')
  .option('--command <command>', 'the new program (default: the one that serves)')
  .option('--arg <arg>', 'an argument of the new program (repeatable; replaces the current args; --arg=--flag for one that starts with -)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('--env <NAME=value>', 'an environment variable of the new program (repeatable; set over the current environment)', parseEnv, {} as Record<string, string>)
  .option('--probation <ms>', "the new version's probation window for this handoff, in ms (0: none)", parseMs)
  .option('--drain-timeout <duration>', 'how long the old version may drain in this handoff (45s, 2m, 1500ms; default: [timeouts] drain); its long-lived work still running then is cut', parseDrainTimeout)
  .option('--no-drain-wait', "cut the old version's long-lived work (jobs, streams) at once instead of waiting for it; requests in progress still finish")
  .option('--wait', 'wait through the probation too: exit 2 if the new version was reverted')
  .option('--json', 'print the answer lines as JSON')
  .action(async (o: { command?: string; arg: string[]; env: Record<string, string>; probation?: number; drainTimeout?: number; drainWait?: boolean; wait?: boolean; json?: boolean }) => {
    const request: TriggerRequest = {
      cmd: 'upgrade',
      ...(o.command ? { command: o.command } : {}),
      ...(o.arg.length ? { args: o.arg } : {}),
      ...(Object.keys(o.env).length ? { env: o.env } : {}),
      ...(o.probation === undefined ? {} : { probation: o.probation }),
      ...(o.wait ? { wait: true } : {}),
      ...drainOf(o),
    };
    await streamHandoff(request, o);
  });

/**
 * Sends a reload in place (a plugin, or the daemon's configuration) and streams its steps and
 * outcome; exits 0 when reloaded, 2 when it failed or was rolled back (the daemon serves on
 * with what it had), 1 when nothing was tried.
 */
async function streamReload(request: TriggerRequest, o: { json?: boolean }): Promise<never> {
  const answers = await ask(socketPath(), request, (a) => {
    if (o.json) process.stdout.write(`${JSON.stringify(a)}\n`);
    else if (a.type === 'reloadStep') process.stdout.write(`${String(a.phase)}: ${String(a.detail)}\n`);
  }).catch((error: unknown) => fail((error as Error).message));
  const error = answers.find((a) => a.type === 'error');
  if (error) {
    if (!o.json) process.stderr.write(`handoffctl: ${typeof error.code === 'string' ? `${error.code}: ` : ''}${String(error.message)}\n`);
    process.exit(1);
  }
  const done = answers.find((a) => a.type === 'reloadDone');
  if (!done) fail('the supervisor closed the connection before the outcome of the reload; did it die? check its log, then "handoffctl status"');
  const target = done.target as { plugin?: string } | undefined;
  const what = target?.plugin ? `plugin ${target.plugin}` : "the daemon's configuration";
  const took = `${String(done.durationMs)} ms`;
  const version = typeof done.version === 'string' ? done.version : '';
  const cut = typeof done.cutCalls === 'number' && done.cutCalls > 0 ? `; ${done.cutCalls} call(s) of the old version cut by its drain deadline` : '';
  if (!o.json) {
    if (done.outcome === 'reloaded') process.stdout.write(`reloaded ${what}${version ? `: ${version} in force` : ''} in pid ${String(done.pid)} (${took}, no handoff)${cut}\n`);
    else if (done.outcome === 'refused') process.stderr.write(`handoffctl: the daemon refused to reload ${what}: ${String(done.error)}\n`);
    else process.stderr.write(`handoffctl: ${what} ${done.outcome === 'rolledBack' ? 'was rolled back' : 'was not reloaded'}: ${String(done.error)}; ${version ? `${version} serves on` : 'the daemon serves on with what it had'}${cut}\n`);
  }
  process.exit(done.outcome === 'reloaded' ? 0 : done.outcome === 'refused' ? 1 : 2);
}

program
  .command('reload')
  .argument('[plugin]', 'reload this plugin of the daemon in place, without a handoff')
  .description("re-read the configuration file and hand off to its daemon settings (an invalid file changes nothing), as SIGHUP does; or, given a plugin or --daemon-config, reload that inside the running daemon without a handoff")
  .option('--from <file>', 'with a plugin: load this module instead of the plugin\'s own file')
  .option('--daemon-config', "re-read the daemon's own configuration in place (its reloadConfig hook), without a handoff")
  .option('--drain-timeout <duration>', 'how long the old version may drain in this handoff (a handoff only; 45s, 2m, 1500ms)', parseDrainTimeout)
  .option('--no-drain-wait', "cut the old version's long-lived work at once instead of waiting for it (a handoff only)")
  .option('--wait', "wait through the new version's probation too (a handoff only)")
  .option('--json', 'print the answer lines as JSON')
  .action(async (plugin: string | undefined, o: { from?: string; daemonConfig?: boolean; drainTimeout?: number; drainWait?: boolean; wait?: boolean; json?: boolean }) => {
    if (plugin !== undefined || o.daemonConfig) {
      if (plugin !== undefined && o.daemonConfig) fail('give a plugin or --daemon-config, not both');
      if (o.wait) fail('--wait is for a reload that hands off; a reload in place answers once it is settled');
      if (o.drainTimeout !== undefined || o.drainWait === false) fail(`${o.drainTimeout !== undefined ? '--drain-timeout' : '--no-drain-wait'} is for a reload that hands off, not a reload in place`);
      if (o.from !== undefined && plugin === undefined) fail('--from needs a plugin name');
      const request: TriggerRequest = plugin !== undefined ? { cmd: 'reload', plugin, ...(o.from !== undefined ? { source: resolve(o.from) } : {}) } : { cmd: 'reload', daemonConfig: true };
      await streamReload(request, o);
    }
    if (o.from !== undefined) fail('--from needs a plugin name');
    await streamHandoff({ cmd: 'reload', ...(o.wait ? { wait: true } : {}), ...drainOf(o) }, o);
  });

program
  .command('status')
  .description("show the supervisor's state")
  .option('--json', 'print the status as JSON')
  .action(async (o: { json?: boolean }) => {
    const [s] = await ask(socketPath(), { cmd: 'status' }).catch((error: unknown) => fail((error as Error).message));
    if (s?.type !== 'status') fail(`unexpected answer: ${JSON.stringify(s)}`);
    if (o.json) {
      process.stdout.write(`${JSON.stringify(s)}\n`);
      return;
    }
    const inc = s.incumbent as { pid: number; buildId: string; generation: number; uptimeMs: number; session: boolean } | null;
    const handoff = s.handoff as { handoffId: string; phase: string; drain?: unknown } | null;
    // The last drain report, aged to now: its times were those of when it was sent.
    const drain = handoff?.phase === 'preparing' ? asDrainProgress(handoff.drain) : null;
    const drainAt = Number((handoff?.drain as { at?: unknown } | null | undefined)?.at);
    const since = Number.isFinite(drainAt) ? Math.max(0, Date.now() - drainAt) : 0;
    const draining = drain ? ` — draining: ${describeDrain({ ...drain, oldestMs: drain.oldest === '' ? drain.oldestMs : drain.oldestMs + since, leftMs: Math.max(0, drain.leftMs - since) })}` : '';
    const last = s.lastHandoff as Answer | null;
    const v = s.versions as
      | { program: unknown; good: boolean; lastGood: unknown; probation: { pid: number; endsInMs: number } | null; lastProbation: { pid: number; outcome: string; reason: string | null; at: number } | null; lastRevert: { reason: string; at: number } | null }
      | undefined;
    const h = s.health as { pid: number; ok: boolean; detail: string; at: number; failuresInRow: number } | null | undefined;
    const ago = (at: number): string => `${Math.max(0, Math.round((Date.now() - at) / 1000))} s ago`;
    const state = v ? (v.probation ? `on probation, ${Math.ceil(v.probation.endsInMs / 1000)} s left` : v.good ? 'good' : v.lastProbation?.outcome === 'failed' ? 'failed its probation' : 'not proven') : '?';
    const lines = [
      `supervisor   pid ${String(s.pid)} (its supervisor process ${String(s.supervisorPid)}, up ${Math.round(Number(s.supervisorUptimeMs) / 1000)} s), ${String(s.lifecycle)}`,
      `daemon       ${inc ? `pid ${inc.pid}, build ${inc.buildId || '?'}, generation ${inc.generation}, up ${Math.round(inc.uptimeMs / 1000)} s${inc.session ? '' : ' (reconnecting)'}` : 'none serves'}`,
      `program      ${describeProgram(s.program)} — ${state}`,
      `fallback     ${v?.lastGood ? `${describeProgram(v.lastGood)} (the last known good version before it)` : 'none: no other known-good version'}`,
      ...(isProgram(s.configured) && isProgram(s.program) && !sameProgram(s.configured, s.program) ? [`configured   ${describeProgram(s.configured)} ("handoffctl reload" hands off to it)`] : []),
      // The health check runs during a probation: its last result then.
      ...(h && v?.probation && h.pid === v.probation.pid ? [`health       ${h.ok ? 'ok' : `FAILING (${h.failuresInRow} in a row)`} — ${h.detail} (${ago(h.at)})`] : []),
      ...(v?.lastProbation && v.lastProbation.outcome !== 'passed' && v.lastProbation.reason !== v.lastRevert?.reason ? [`probation    ${v.lastProbation.outcome} ${ago(v.lastProbation.at)}: ${v.lastProbation.reason ?? ''}`] : []),
      ...(v?.lastRevert ? [`reverted     ${ago(v.lastRevert.at)} to the last known good version: ${v.lastRevert.reason}`] : []),
      `handoff      ${handoff ? `${handoff.handoffId} in phase ${handoff.phase}${draining}` : 'none in progress'}`,
      ...(typeof s.reloading === 'string' ? [`reloading    ${s.reloading} in place`] : []),
      `last         ${last ? describeResult(last, true) : 'none'}`,
      `restarts     ${String(s.restarts)}`,
      ...(typeof s.failure === 'string' ? [`failure      ${s.failure}`, ...(s.failure.includes('handoffctl upgrade') ? [] : [`             "handoffctl upgrade" (or "reload") starts the daemon again`])] : []),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  });

program
  .command('stop')
  .description('stop the supervisor: the daemon drains and seals, nothing acknowledged is lost')
  .option('--no-wait', 'return once the supervisor has begun stopping')
  .action(async (o: { wait: boolean }) => {
    const socket = socketPath();
    await ask(socket, { cmd: 'stop' }).catch((error: unknown) => fail((error as Error).message));
    if (!o.wait) {
      process.stdout.write('stopping\n');
      return;
    }
    // The trigger socket closes once the daemon has drained and sealed and the supervisor exits.
    const started = Date.now();
    while (Date.now() - started < 10 * 60_000) {
      const gone = await ask(socket, { cmd: 'status' }).then(
        () => false,
        () => true,
      );
      if (gone) {
        process.stdout.write(`stopped in ${Date.now() - started} ms\n`);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    fail('the supervisor is still stopping after 10 minutes; check its log');
  });

program
  .command('restart-supervisor')
  .description("replace the supervisor process by a fresh one running the code now on disk (after a package upgrade); the daemon serves on and is adopted")
  .action(async () => {
    const socket = socketPath();
    const [answer] = await ask(socket, { cmd: 'restart-supervisor' }).catch((error: unknown) => fail((error as Error).message));
    if (answer?.type !== 'restarting') fail(answer?.type === 'error' ? `${String(answer.code)}: ${String(answer.message)}` : `unexpected answer: ${JSON.stringify(answer)}`);
    const before = Number(answer.supervisorPid);
    const started = Date.now();
    // The new supervisor answers once it has adopted the daemon.
    while (Date.now() - started < 60_000) {
      const [s] = await ask(socket, { cmd: 'status' }).catch(() => [undefined]);
      if (s?.type === 'status' && s.supervisorPid !== before && s.lifecycle !== 'recovering' && s.lifecycle !== 'starting') {
        const inc = s.incumbent as { pid: number } | null;
        const was = typeof answer.daemonPid === 'number' ? answer.daemonPid : null;
        const same = inc !== null && inc.pid === was;
        const daemon = same ? `the daemon (pid ${inc.pid}) served throughout` : `daemon now ${inc ? `pid ${inc.pid}` : 'none'} (was ${was === null ? 'none' : `pid ${was}`})`;
        process.stdout.write(`supervisor replaced: pid ${before} → ${String(s.supervisorPid)} in ${Date.now() - started} ms; ${daemon}\n`);
        process.exit(same || was === null ? 0 : 1);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    fail(`the new supervisor did not answer within 60 s; check its log, then "handoffctl status"`);
  });

await program.parseAsync();
