#!/usr/bin/env node
/**
 * handoffctl: the control client of handoff-supervisor.
 *
 *   handoffctl [--socket path | --config file] upgrade [--command cmd] [--arg a]... [--env K=V]... [--json]
 *   handoffctl ... status [--json]
 *   handoffctl ... stop [--no-wait]
 *   handoffctl ... restart-supervisor
 *
 * Exit codes: 0 committed (or done); 2 rolled back (the old version serves on); 1 error
 * (nothing changed: unreachable, in progress, pre-handoff check failed, bad request).
 */
import { Command, InvalidArgumentError } from 'commander';
import { ask } from './client.js';
import type { Answer } from './client.js';
import { loadConfig } from './config.js';
import { ConfigError } from './errors.js';
import { ENV_NAME } from './trigger.js';

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
      return loadConfig(o.config).triggerSocket;
    } catch (error) {
      if (error instanceof ConfigError) fail(error.message);
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

function describeResult(r: Answer): string {
  const timings = r.timings as { totalMs: number; phases: Record<string, number> };
  const phases = Object.entries(timings.phases).map(([p, ms]) => `${p} ${ms} ms`).join(', ');
  const serving = typeof r.incumbentPid === 'number' ? `now serving pid ${r.incumbentPid}` : 'no daemon serves yet';
  const aftermath = typeof r.aftermath === 'string' ? `\nafter the handoff: ${r.aftermath}` : '';
  if (r.committed === true) return `committed: handoff ${String(r.handoffId)} (${String(r.outcome)}) in ${timings.totalMs} ms — ${phases}; ${serving}${aftermath}`;
  const abort = r.abortReason as { code: string; reason: string } | null;
  const who = typeof r.incumbentPid === 'number' ? `the previous version serves on (pid ${r.incumbentPid})` : 'no daemon serves yet';
  return `rolled back: handoff ${String(r.handoffId)} — ${abort?.code ?? ''}: ${abort?.reason ?? ''}; ${who}${aftermath}`;
}

function parseEnv(value: string, previous: Record<string, string>): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0 || !ENV_NAME.test(value.slice(0, eq))) throw new InvalidArgumentError(`expected NAME=value, got ${JSON.stringify(value)}`);
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

program
  .command('upgrade')
  .description('hand off to a new program and wait for the outcome')
  .option('--command <command>', 'the new program (default: the configured command)')
  .option('--arg <arg>', 'an argument of the new program (repeatable; replaces the current args)', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('--env <NAME=value>', 'an environment variable of the new program (repeatable; set over the current environment)', parseEnv, {} as Record<string, string>)
  .option('--json', 'print the answer lines as JSON')
  .action(async (o: { command?: string; arg: string[]; env: Record<string, string>; json?: boolean }) => {
    const tty = process.stderr.isTTY && !o.json;
    let spin = 0;
    let current = 'starting';
    const started = Date.now();
    const timer = tty
      ? setInterval(() => {
          process.stderr.write(`\r${SPINNER[spin++ % SPINNER.length] ?? ''} ${current}  ${Date.now() - started} ms   `);
        }, 80)
      : undefined;
    const request = { cmd: 'upgrade' as const, ...(o.command ? { command: o.command } : {}), ...(o.arg.length ? { args: o.arg } : {}), ...(Object.keys(o.env).length ? { env: o.env } : {}) };
    const answers = await ask(socketPath(), request, (a) => {
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
      }
    }).catch((error: unknown) => fail((error as Error).message));
    clearInterval(timer);
    if (tty) process.stderr.write('\r');
    const last = answers.at(-1);
    if (last?.type === 'result') {
      if (!o.json) process.stdout.write(`${describeResult(last)}\n`);
      process.exit(last.committed === true ? 0 : 2);
    }
    if (last?.type !== 'error') {
      fail(`the supervisor closed the connection before the outcome${last ? ` (last phase: ${String(last.phase)})` : ''}; did it die? check its log, then "handoffctl status"`);
    }
    if (!o.json) process.stderr.write(`handoffctl: ${String(last.code)}: ${String(last.message)}\n${typeof last.output === 'string' && last.output ? `--- output ---\n${last.output}\n` : ''}`);
    process.exit(1);
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
    const prog = s.program as { command: string; args: string[] } | undefined;
    const handoff = s.handoff as { handoffId: string; phase: string } | null;
    const last = s.lastHandoff as Answer | null;
    const lines = [
      `supervisor   pid ${String(s.pid)} (its supervisor process ${String(s.supervisorPid)}, up ${Math.round(Number(s.supervisorUptimeMs) / 1000)} s), ${String(s.lifecycle)}`,
      `daemon       ${inc ? `pid ${inc.pid}, build ${inc.buildId || '?'}, generation ${inc.generation}, up ${Math.round(inc.uptimeMs / 1000)} s${inc.session ? '' : ' (reconnecting)'}` : 'none'}`,
      `program      ${prog ? [prog.command, ...prog.args].join(' ') : '?'}`,
      `handoff      ${handoff ? `${handoff.handoffId} in phase ${handoff.phase}` : 'none in progress'}`,
      `last         ${last ? describeResult(last) : 'none'}`,
      `restarts     ${String(s.restarts)}${typeof s.failure === 'string' ? `\nfailure      ${s.failure}` : ''}`,
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
        const same = inc !== null && inc.pid === answer.daemonPid;
        const daemon = same ? `the daemon (pid ${inc.pid}) served throughout` : `daemon now ${inc ? `pid ${inc.pid}` : 'none'} (was ${String(answer.daemonPid)})`;
        process.stdout.write(`supervisor replaced: pid ${before} → ${String(s.supervisorPid)} in ${Date.now() - started} ms; ${daemon}\n`);
        process.exit(same || answer.daemonPid === null ? 0 : 1);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    fail(`the new supervisor did not answer within 60 s; check its log, then "handoffctl status"`);
  });

await program.parseAsync();
