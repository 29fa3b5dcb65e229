#!/usr/bin/env node
/**
 * handoff's side-by-side benchmark. On loopback, bounded in time, one system after another:
 * this project (a stateless app, the same without a data directory handed off by overlap,
 * and the key-value daemon), a kill-and-restart, PM2 cluster reload with and without
 * draining, PM2 fork restart, nginx's binary upgrade (when nginx is installed); then three
 * scale curves (idle keep-alive connections, the key-value daemon's data size, WebSocket
 * clients), the data-path overhead and the in-process hot reload of `@handoff/reload`
 * (call costs, reload time, failed calls, memory per reload).
 *
 *   pnpm bench [--quick] [--out DIR] [--only id,id] [--docs]
 *
 * --only takes system ids and part names (see --help): e.g. `--only connections,ws` runs the
 * connection curve and the WebSocket curve alone.
 *
 * Writes DIR/bench.json, DIR/bench.md and DIR/latency.svg (DIR: tools/bench/results); with
 * --docs also docs/benchmarks.md and docs/benchmarks-latency.svg. Figures are reported,
 * never judged, but the exit code says whether the run did what it reports:
 *   1  the harness itself failed (a system that would not start, a run that threw, a system
 *      named in --only that was skipped);
 *   3  a handoff of this project's did not commit, or a plugin reload did not reload (one line
 *      on stderr names the rows and points, with the abort codes or causes; their tables say
 *      FAILED). Peers' rows keep their own error accounting.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, release, totalmem, type } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connectionCurve, dataCurve, emptyResult, FULL, overhead, QUICK, runSystem, wsCurve } from './run.js';
import type { CurvePoint, OverheadRow, SystemResult, WsPoint } from './run.js';
import { reloadBench } from './reload.js';
import type { ReloadResult } from './reload.js';
import { failedHandoffs, markdown, svg } from './report.js';
import type { BenchResult, Machine } from './report.js';
import { HandoffSystem, NaiveRestart, NginxUpgrade, Pm2Home, Pm2System } from './systems.js';
import type { System } from './systems.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const require = createRequire(import.meta.url);

const USAGE = 'usage: pnpm bench [--quick] [--out DIR] [--only id,id,...] [--docs]';
/** The parts besides the systems' runs, by their --only name. */
const PART_HELP: Readonly<Record<string, string>> = {
  connections: 'scale curve: handoff duration, stall and idle keep-alive connections kept, against open connections (handoff moving / draining them, PM2 cluster reload)',
  data: "scale curve: handoff duration and stall against the key-value daemon's data size",
  ws: 'scale curve: WebSocket clients of apps/ws-chat through handoffs (connections moving / draining): kept, reconnects, stall',
  overhead: 'data-path overhead, no handoff (bare Node, handoff, PM2 cluster)',
  reload: 'in-process hot reload (@handoff/reload): call costs, reload time, memory',
};
const PARTS = Object.keys(PART_HELP);
let args;
try {
  args = parseArgs({
    options: { quick: { type: 'boolean', default: false }, out: { type: 'string' }, only: { type: 'string' }, docs: { type: 'boolean', default: false }, help: { type: 'boolean', default: false } },
    allowPositionals: false,
  }).values;
} catch (error) {
  console.error(`bench: ${(error as Error).message}\n${USAGE}`);
  process.exit(2);
}
const preset = args.quick ? QUICK : FULL;
const out = resolve(args.out ?? join(ROOT, 'tools', 'bench', 'results'));

const systems: System[] = [
  new HandoffSystem('hello'),
  new HandoffSystem('hello', { stateless: true }),
  new NaiveRestart('hello'),
  new Pm2System('cluster', false, 'hello'),
  new Pm2System('cluster', true, 'hello'),
  new Pm2System('fork', false, 'hello'),
  new NginxUpgrade(),
  new HandoffSystem('kv'),
  new NaiveRestart('kv'),
  new Pm2System('cluster', true, 'kv'),
  new Pm2System('fork', false, 'kv'),
];
const systemIds = (): string[] => systems.map((s) => s.id);
if (args.help) {
  console.log(`${USAGE}

  --quick        a smoke run (about 2 minutes): fewer handoffs, one small point per curve
  --out DIR      where bench.json, bench.md and latency.svg go (default tools/bench/results)
  --only LIST    run only these, comma-separated: system ids and part names
  --docs         also rewrite docs/benchmarks.md (keeps its "Findings of this run")

parts (for --only):
${PARTS.map((p) => `  ${p.padEnd(13)}${PART_HELP[p] ?? ''}`).join('\n')}

systems (for --only): ${systemIds().join(', ')}`);
  process.exit(0);
}
const only = args.only?.split(',').map((s) => s.trim()).filter(Boolean) ?? null;
if (only) {
  const known = [...systems.map((s) => s.id), ...PARTS];
  const unknown = only.filter((id) => !known.includes(id));
  if (unknown.length) {
    console.error(`bench: unknown --only ${unknown.join(', ')}; known: ${known.join(', ')}`);
    process.exit(2);
  }
}
const wanted = (id: string): boolean => only === null || only.includes(id);

function version(pkg: string): string {
  try {
    return (JSON.parse(readFileSync(require.resolve(`${pkg}/package.json`), 'utf8')) as { version: string }).version;
  } catch {
    return 'not installed';
  }
}

function machine(): Machine {
  const nginx = spawnSync('nginx', ['-v'], { encoding: 'utf8' });
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    os: `${type()} ${release()}`,
    node: process.version,
    peers: {
      autocannon: version('autocannon'),
      pm2: version('pm2'),
      nginx: nginx.error ? 'not installed' : nginx.stderr.trim().replace(/^nginx version: /, ''),
    },
  };
}

const started = Date.now();
const log = (line: string): void => {
  console.log(`${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s ${line}`);
};
// Ctrl-C: stop what runs (PM2's daemon lives in a temp home), then exit.
process.once('SIGINT', () => {
  void (Pm2Home.opened?.close() ?? Promise.resolve()).finally(() => process.exit(130));
});

const results: SystemResult[] = [];
let connectionPoints: CurvePoint[] = [];
let dataPoints: CurvePoint[] = [];
let wsPoints: WsPoint[] = [];
let overheadRows: OverheadRow[] = [];
let reloadResult: ReloadResult | null = null;
let harnessFailed = false;
const guard = async <T>(what: string, f: () => Promise<T>, fallback: T): Promise<T> => {
  try {
    return await f();
  } catch (error) {
    harnessFailed = true;
    console.error(`bench: ${what} failed: ${(error as Error).stack ?? String(error)}`);
    return fallback;
  }
};
try {
  log(`handoff benchmark (${args.quick ? 'quick' : 'full'}), results in ${out}`);
  for (const system of systems.filter((s) => wanted(s.id))) {
    log(`${system.label} [${system.id}]`);
    let r: SystemResult;
    try {
      r = await runSystem(system, preset, log);
    } catch (error) {
      console.error(`bench: ${system.label} failed: ${(error as Error).stack ?? String(error)}`);
      r = emptyResult(system, null, (error as Error).message);
    }
    if (r.skipped !== null) log(`  skipped: ${r.skipped}`);
    if (r.failure !== null) harnessFailed = true;
    // Named explicitly and not run: the run did not do what was asked.
    if (r.skipped !== null && only !== null) {
      harnessFailed = true;
      console.error(`bench: ${system.id} was asked for with --only but skipped: ${r.skipped}`);
    }
    results.push(r);
  }
  if (wanted('connections')) {
    log('scale curve: open connections');
    connectionPoints = await guard('the connection curve', () => connectionCurve(preset, log), []);
  }
  if (wanted('data')) {
    log('scale curve: data size');
    dataPoints = await guard('the data-size curve', () => dataCurve(preset, log), []);
  }
  if (wanted('ws')) {
    log('scale curve: WebSocket clients');
    wsPoints = await guard('the WebSocket curve', () => wsCurve(preset, log), []);
  }
  if (wanted('overhead')) {
    log('data-path overhead');
    overheadRows = await guard('the overhead run', () => overhead(preset, log), []);
  }
  if (wanted('reload')) {
    log('in-process hot reload (@handoff/reload)');
    reloadResult = await guard('the hot-reload run', () => reloadBench(preset, log), null);
  }
} finally {
  await Pm2Home.opened?.close();
}
if ([...connectionPoints, ...dataPoints, ...wsPoints].some((p) => p.failure !== null)) harnessFailed = true;
// A memory probe that did not run to its result: the harness failed, like a curve point.
if (reloadResult?.memory.some((m) => m.failure !== null)) harnessFailed = true;

const result: BenchResult = {
  version: 1,
  preset: args.quick ? 'quick' : 'full',
  startedAt: new Date(started).toISOString(),
  durationS: Math.round((Date.now() - started) / 1000),
  machine: machine(),
  settings: { ...preset },
  systems: results,
  connectionCurve: connectionPoints,
  dataCurve: dataPoints,
  wsCurve: wsPoints,
  overhead: overheadRows,
  reload: reloadResult,
};
mkdirSync(out, { recursive: true });
const report = markdown(result);
writeFileSync(join(out, 'bench.json'), `${JSON.stringify(result, null, 1)}\n`);
writeFileSync(join(out, 'bench.md'), report);
writeFileSync(join(out, 'latency.svg'), svg(results));
if (args.docs) {
  const m = result.machine;
  const page = join(ROOT, 'docs', 'benchmarks.md');
  // The hand-written findings at the end of the page survive a rewrite (update them by hand).
  const FINDINGS = '## Findings of this run';
  const previous = existsSync(page) ? readFileSync(page, 'utf8') : '';
  const findings = previous.includes(FINDINGS) ? `\n${previous.slice(previous.indexOf(FINDINGS))}` : '';
  writeFileSync(join(ROOT, 'docs', 'benchmarks-latency.svg'), svg(results));
  writeFileSync(
    page,
    `# Benchmarks

The latest full run of \`pnpm bench\` (tools/bench), every figure measured side by side in one run
on one machine, so compare ratios, not absolutes. Nothing here is asserted by a test; the test suite
runs \`pnpm bench --quick\` only to check that the harness works and that this project's rows show
0 errors and 0 lost writes.

**Machine:** ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.os}; Node ${m.node};
autocannon ${m.peers.autocannon ?? '?'}, PM2 ${m.peers.pm2 ?? '?'}, nginx ${m.peers.nginx ?? '?'}. Everything on loopback.
The run took ${result.durationS} s.

**Reproduce:** \`pnpm install && pnpm build && pnpm bench\` (add \`--quick\` for a run of about 2 minutes,
\`--only handoff-hello,pm2-cluster-drain-hello\` for some systems or \`--only connections,ws\` for some parts (\`pnpm bench --help\`
lists them), \`--docs\` to rewrite this page).
Results go to \`tools/bench/results/\` (bench.json, bench.md, latency.svg). nginx's row needs nginx
(Debian: \`apt-get install nginx-light\`); without it the row says skipped. \`pnpm bench\` exits 3 when a
handoff of this project's did not commit (stderr names the rows), 1 when the harness failed.

${report.replace('](latency.svg)', '](benchmarks-latency.svg)')}
## How to read it

- **refused**: the connection was refused (nobody listening). autocannon reconnects at once after
  a refusal, so during an outage this counts connect attempts, not users.
- **reset**: the connection was reset or closed with a request in flight (a real client sees that
  request fail; autocannon alone would retry it silently, the benchmark counts it).
- **longest no-accept**: the longest a new client waited, or kept failing, before being served.
  **Added no-accept** (data size): what a handoff added to it, against the same run before its
  first handoff.
- **without load**: this project's handoffs again with only the fresh-connection prober running,
  to tell the handoff's own stall from the queueing behind a saturating load.
- **lost writes**: acknowledged writes (the daemon fsyncs before answering) missing or wrong when
  read back after the last handoff.
- **moved per handoff**: the connections the old daemon handed to the new one at a handoff (the
  handoff result's \`drained.connsOffered\`). **Kept open** / **kept connected**: connections open
  before the handoffs that still answered on the same connection after them; one the server
  closed does not count, even if its client reconnected.
- **FAILED**: a handoff of this project's did not commit (the supervisor rolled it back and the
  old version served on); the note gives the abort code and reason (\`BENCH_*\` codes are the
  harness's own: no answer in time, or not triggered after one that got none). Such a row or point
  shows no timing figures, and \`pnpm bench\` exits non-zero.
${findings}`,
  );
}
console.log(`\n${report}`);
log(`wrote ${join(out, 'bench.json')}, bench.md, latency.svg${args.docs ? '; docs/benchmarks.md' : ''} (${result.durationS} s)`);
const failed = failedHandoffs(result);
if (failed.length > 0) console.error(`bench: handoffs did not commit: ${failed.join('; ')}`);
if (harnessFailed) console.error('bench: the harness failed (see above)');
// PM2's client library keeps handles open after disconnecting: exit explicitly.
process.exit(harnessFailed ? 1 : failed.length > 0 ? 3 : 0);
