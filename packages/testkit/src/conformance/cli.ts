#!/usr/bin/env node
/**
 * handoff-conformance: runs a daemon (any language) through every check of the conformance
 * kit and prints a table naming the PROTOCOL.md section of each; exit 0 only when none failed.
 *
 *   handoff-conformance [--env K=V]... [--cwd DIR] [--health-path /health] [--reference kv]
 *                       [--knob NAME=K=V]... [--only id,id] [--json FILE] -- <command> [args...]
 *
 * Exit status: 0 all passed (skips allowed), 1 a check failed, 2 bad input (no command, a
 * command that does not exist, a daemon that never serves).
 */
import { writeFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { formatReport } from './report.js';
import { ConformanceInputError, abortConformanceRuns, runConformance } from './run.js';
import { CHECKS, KNOB_NAMES } from './scenarios.js';
import type { KnobName } from './scenarios.js';

const NAME = 'handoff-conformance';

function die(message: string): never {
  process.stderr.write(`${NAME}: ${message}\n`);
  process.exit(2);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function pair(text: string, what: string): [string, string] {
  const at = text.indexOf('=');
  if (at <= 0) die(`${what} ${JSON.stringify(text)} is not NAME=VALUE`);
  return [text.slice(0, at), text.slice(at + 1)];
}

async function main(): Promise<void> {
  const program = new Command(NAME)
    .description('Runs a daemon through every scenario of the handoff protocol (PROTOCOL.md) under load, and reports each check with its section.')
    .usage('[options] -- <command> [args...]')
    .option('--env <K=V>', 'environment of the daemon (repeatable)', collect, [])
    .option('--cwd <dir>', "the daemon's working directory")
    .option('--health-path <path>', 'where the daemon answers JSON with its pid', '/health')
    .addOption(new Option('--reference <format>', 'the daemon keeps its data in this reference format: handoffs to and from the reference daemon are checked').choices(['kv']))
    .option('--knob <name=K=V>', `fault knob: environment that makes the daemon misbehave (${KNOB_NAMES.join(', ')}; repeatable)`, collect, [])
    .option('--only <ids>', `run only these checks (comma-separated): ${CHECKS.map((c) => c.id).join(', ')}`)
    .option('--json <file>', 'also write the report as JSON')
    .argument('[command...]', 'the daemon command line (after --)')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  try {
    program.parse(process.argv);
  } catch (error) {
    if (error instanceof CommanderError) process.exit(error.exitCode === 0 ? 0 : 2);
    throw error;
  }
  const o = program.opts<{ env: string[]; cwd?: string; healthPath: string; reference?: 'kv'; knob: string[]; only?: string; json?: string }>();
  const [command, ...args] = program.args;
  if (!command) die('no daemon command given; usage: handoff-conformance [options] -- <command> [args...]');
  const env = Object.fromEntries(o.env.map((e) => pair(e, '--env')));
  const knobs: Partial<Record<KnobName, Record<string, string>>> = {};
  for (const k of o.knob) {
    const [name, rest] = pair(k, '--knob');
    // (The name is checked by runConformance, the one place that knows the knobs.)
    const [key, value] = pair(rest, `--knob ${name}`);
    knobs[name as KnobName] = { ...knobs[name as KnobName], [key]: value };
  }
  // Interrupted: kill what the run started, remove its directories, and go.
  const interrupt = (signal: NodeJS.Signals): void => {
    abortConformanceRuns();
    process.stderr.write(`${NAME}: interrupted (${signal}); everything it started was killed\n`);
    process.exit(130);
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  process.stderr.write(`${NAME}: checking ${[command, ...args].join(' ')}\n`);
  try {
    const report = await runConformance({
      command,
      args,
      env,
      ...(o.cwd ? { cwd: o.cwd } : {}),
      healthPath: o.healthPath,
      reference: o.reference ?? null,
      knobs,
      ...(o.only ? { only: o.only.split(',').map((s) => s.trim()).filter((s) => s !== '') } : {}),
      onCheck: (c) => {
        process.stderr.write(`  ${c.status === 'passed' ? 'pass' : c.status === 'failed' ? 'FAIL' : 'skip'} ${c.id} (${c.ms} ms)\n`);
      },
    });
    process.stdout.write(formatReport(report));
    if (o.json) writeFileSync(o.json, `${JSON.stringify(report, null, 2)}\n`);
    process.exit(report.ok ? 0 : 1);
  } catch (error) {
    if (error instanceof ConformanceInputError) die(error.message);
    die(`internal error: ${(error as Error).message.split('\n')[0] ?? ''}`);
  }
}

await main();
