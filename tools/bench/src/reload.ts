/**
 * In-process hot reload (`@handoff/reload`): what a call into a plugin costs in each mode
 * beside a direct function call, how long a reload takes while callers keep calling, whether
 * any of their calls failed, and the memory a reload leaves behind (in a child process of its
 * own, where a full GC can be forced). Measured, never asserted: a reload that did not reload
 * or a call that failed is reported, and the report says so.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { HotPlugin } from '@handoff/reload';
import type { PluginMode } from '@handoff/reload';
import { exited } from './proc.js';
import type { Preset } from './run.js';
import { median, quantile } from './stats.js';

const MEMORY_PROBE = fileURLToPath(new URL('./reload-memory.js', import.meta.url));

/** The plugin's contract: one small string transform. */
export interface Shout {
  shout: (text: string) => string;
}

/**
 * Version `label` of the plugin module: the same small string transform in every version,
 * only the exported `version` differs (so that each reload loads new code, not a cached
 * module).
 */
export function pluginSource(label: string): string {
  return `export const version = ${JSON.stringify(label)};
export function shout(text) {
  return text.toUpperCase() + '!';
}
`;
}

const WORDS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel'];
/** The i-th argument: a few different strings, so that no call is folded into a constant. */
export const word = (i: number): string => WORDS[i & 7] ?? '';
/** What `shout(word(i))` answers. */
const expected = (i: number): string => `${word(i).toUpperCase()}!`;

export const MODES: readonly PluginMode[] = ['worker', 'inThread'];

/** Probation of the timed reloads: 0 ms, so that a reload's time is the reload's own (load, swap, drain, cleanup). */
export const RELOAD_PROBATION_MS = 0;
/** Callers calling the plugin throughout the timed reloads. */
export const RELOAD_CALLERS = 4;
/** At most this many calls per caller, so that the callers are bounded in count as well as in time. */
const CALLS_PER_CALLER_MAX = 1_000_000;
/** In-flight calls of the worker throughput row. */
export const IN_FLIGHT = 64;
/** Timed rounds per call-cost measurement (after a warm-up of a tenth of the budget). */
const ROUNDS = 5;
/** Reloads of the memory probe before its "before" sample, so that one-time costs are not counted as growth. */
export const MEMORY_WARMUP = 5;

/** One way of calling `shout`: ns per call, the median of the timed rounds and their spread. */
export interface CallCostRow {
  readonly id: 'direct' | 'inThread-callSync' | 'inThread-call' | 'worker-call' | 'worker-inFlight';
  readonly label: string;
  readonly nsPerCall: number;
  readonly nsMin: number;
  readonly nsMax: number;
  /** ns per call of each timed round. */
  readonly rounds: readonly number[];
  /** Calls made in the timed rounds. */
  readonly calls: number;
}

/** A reload that did not end with the new version serving. */
export interface NotReloaded {
  readonly index: number;
  readonly outcome: string;
  readonly cause: string | null;
  readonly error: string;
}

/** One mode's timed reloads, and the calls made meanwhile. */
export interface ReloadRow {
  readonly mode: PluginMode;
  readonly probationMs: number;
  readonly planned: number;
  /** Reloads requested (fewer than planned when the loop's deadline passed). */
  readonly done: number;
  readonly notReloaded: readonly NotReloaded[];
  /** Request to settled (probation over, the old version drained and freed), ms, over the reloads that reloaded. */
  readonly p50Ms: number;
  readonly p95Ms: number;
  readonly maxMs: number;
  readonly callers: number;
  /** Calls made by the callers during the reloads. */
  readonly calls: number;
  /** Of those, the ones that rejected or answered wrong. */
  readonly callsFailed: number;
  readonly firstFailure: string | null;
}

/** What the memory probe prints (one JSON line). */
export interface MemoryProbe {
  readonly mode: PluginMode;
  readonly reloads: number;
  readonly warmup: number;
  /** Seconds the `reloads` reloads took (samples included). */
  readonly seconds: number;
  /** Reloads done when the halfway sample was taken. */
  readonly half: number;
  readonly heapBefore: number;
  readonly heapHalf: number;
  readonly heapAfter: number;
  readonly rssBefore: number;
  readonly rssHalf: number;
  readonly rssAfter: number;
  readonly threadsBefore: number;
  readonly threadsAfter: number;
  /** Worker threads of the plugin alive after the last reload (1 in worker mode, 0 in-thread). */
  readonly workersAlive: number;
}

/**
 * One mode's memory probe: what N reloads left, per reload — over all of them, and over the
 * second half alone (from the halfway sample); `failure` when the probe did not run to the end.
 */
export interface MemoryRow {
  readonly mode: PluginMode;
  readonly probe: MemoryProbe | null;
  readonly heapKiBPerReload: number | null;
  readonly rssKiBPerReload: number | null;
  readonly heapKiBPerReloadSecondHalf: number | null;
  readonly rssKiBPerReloadSecondHalf: number | null;
  readonly failure: string | null;
}

export interface ReloadResult {
  /** Calls kept in flight by the worker throughput row. */
  readonly inFlight: number;
  readonly calls: readonly CallCostRow[];
  readonly reloads: readonly ReloadRow[];
  readonly memory: readonly MemoryRow[];
}

/** Calls made until the first check past `until` (epoch of `performance.now()`). */
type Loop = (until: number) => number | Promise<number>;

/**
 * ns per call of `loop` within `budgetMs`: a warm-up of a tenth of the budget (so that the
 * code is optimised before it is timed), then {@link ROUNDS} rounds sharing the rest. A
 * loop checks the clock every chunk of calls, so a round overshoots its slice by one chunk.
 */
async function perCall(budgetMs: number, loop: Loop): Promise<{ nsPerCall: number; nsMin: number; nsMax: number; rounds: number[]; calls: number }> {
  await loop(performance.now() + budgetMs / 10);
  const slice = (budgetMs * 0.9) / ROUNDS;
  const rounds: number[] = [];
  let calls = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const start = performance.now();
    const n = await loop(start + slice);
    rounds.push(((performance.now() - start) * 1e6) / n);
    calls += n;
  }
  return { nsPerCall: median(rounds), nsMin: Math.min(...rounds), nsMax: Math.max(...rounds), rounds, calls };
}

/** Keeps the loops' results alive, so that no call is optimised away. */
const sink = { total: 0 };

async function callCosts(dir: string, p: Preset, log: (line: string) => void): Promise<CallCostRow[]> {
  const file = join(dir, 'calls.mjs');
  writeFileSync(file, pluginSource('calls'));
  const { shout } = (await import(pathToFileURL(file).href)) as Shout;
  const inThread = await HotPlugin.load<Shout>({ name: 'bench-calls-inThread', file, methods: ['shout'], mode: 'inThread' });
  try {
    const worker = await HotPlugin.load<Shout>({ name: 'bench-calls-worker', file, methods: ['shout'], mode: 'worker' });
    try {
      // Synchronous loops check the clock every CHUNK calls (a check costs about as much as a
      // call); a call through a worker is ~100× dearer, so those check after every call.
      const CHUNK = 10_000;
      const AWAITED_CHUNK = 1_000;
      const ways: { id: CallCostRow['id']; label: string; loop: Loop }[] = [
        {
          id: 'direct',
          label: 'direct function call (the module imported)',
          loop: (until) => {
            let calls = 0;
            do {
              for (let i = 0; i < CHUNK; i++) sink.total += shout(word(i)).length;
              calls += CHUNK;
            } while (performance.now() < until);
            return calls;
          },
        },
        {
          id: 'inThread-callSync',
          label: 'in-thread plugin, callSync',
          loop: (until) => {
            let calls = 0;
            do {
              for (let i = 0; i < CHUNK; i++) sink.total += inThread.callSync('shout', word(i)).length;
              calls += CHUNK;
            } while (performance.now() < until);
            return calls;
          },
        },
        {
          id: 'inThread-call',
          label: 'in-thread plugin, call (a promise, awaited)',
          loop: async (until) => {
            let calls = 0;
            do {
              for (let i = 0; i < AWAITED_CHUNK; i++) sink.total += (await inThread.call('shout', word(i))).length;
              calls += AWAITED_CHUNK;
            } while (performance.now() < until);
            return calls;
          },
        },
        {
          id: 'worker-call',
          label: 'worker plugin, call, one at a time (awaited)',
          loop: async (until) => {
            let calls = 0;
            do sink.total += (await worker.call('shout', word(calls++))).length;
            while (performance.now() < until);
            return calls;
          },
        },
        {
          id: 'worker-inFlight',
          label: `worker plugin, call, ${IN_FLIGHT} in flight (throughput, per call)`,
          loop: async (until) => {
            let calls = 0;
            // IN_FLIGHT lanes, each calling again as soon as its answer arrives.
            const lane = async (): Promise<void> => {
              do sink.total += (await worker.call('shout', word(calls++))).length;
              while (performance.now() < until);
            };
            await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
            return calls;
          },
        },
      ];
      const rows: CallCostRow[] = [];
      for (const way of ways) {
        const measured = await perCall(p.reloadCallMs, way.loop);
        log(`  per call: ${way.label}: ${measured.nsPerCall.toFixed(0)} ns`);
        rows.push({ id: way.id, label: way.label, ...measured });
      }
      return rows;
    } finally {
      await worker.close(5_000);
    }
  } finally {
    await inThread.close(5_000);
  }
}

/**
 * `p.reloads` reloads of one plugin, back to back, each of a new version written to its file,
 * timed from the request to the report (settled) — while {@link RELOAD_CALLERS} callers call
 * it throughout: each makes a call, awaits it, checks the answer and yields a turn of the
 * event loop (an in-thread call settles in a microtask; without the yield the callers would
 * starve the reload's own I/O).
 */
async function timedReloads(mode: PluginMode, dir: string, p: Preset, log: (line: string) => void): Promise<ReloadRow> {
  const file = join(dir, `reload-${mode}.mjs`);
  writeFileSync(file, pluginSource(`${mode}-0`));
  const plugin = await HotPlugin.load<Shout>({
    name: `bench-reload-${mode}`,
    file,
    methods: ['shout'],
    mode,
    probation: { ms: RELOAD_PROBATION_MS, maxFailures: 0 },
    loadTimeoutMs: 5_000,
    drainTimeoutMs: 2_000,
  });
  let stop = false;
  let calls = 0;
  let callsFailed = 0;
  let firstFailure: string | null = null;
  const caller = async (): Promise<void> => {
    for (let i = 0; !stop && i < CALLS_PER_CALLER_MAX; i++) {
      calls++;
      try {
        const answer = await plugin.call('shout', word(i));
        if (answer !== expected(i)) throw new Error(`shout(${JSON.stringify(word(i))}) answered ${JSON.stringify(answer)}`);
      } catch (error) {
        callsFailed++;
        firstFailure ??= (error as Error).message;
      }
      await nextTurn();
    }
  };
  const durations: number[] = [];
  const notReloaded: NotReloaded[] = [];
  // The loop's own bound: a reload is bounded by loadTimeoutMs and drainTimeoutMs, the loop by this.
  const deadline = performance.now() + 10_000 + p.reloads * 1_000;
  let done = 0;
  const callers = Array.from({ length: RELOAD_CALLERS }, caller);
  try {
    for (let i = 1; i <= p.reloads && performance.now() < deadline; i++) {
      writeFileSync(file, pluginSource(`${mode}-${i}`));
      const start = performance.now();
      const report = await plugin.reload();
      const ms = performance.now() - start;
      done++;
      if (report.outcome === 'reloaded') durations.push(ms);
      else notReloaded.push({ index: i - 1, outcome: report.outcome, cause: report.cause, error: report.error ?? report.outcome });
    }
  } finally {
    stop = true;
    await Promise.all(callers);
    await plugin.close(5_000);
  }
  const row: ReloadRow = {
    mode,
    probationMs: RELOAD_PROBATION_MS,
    planned: p.reloads,
    done,
    notReloaded,
    p50Ms: quantile(durations, 0.5),
    p95Ms: quantile(durations, 0.95),
    maxMs: Math.max(0, ...durations),
    callers: RELOAD_CALLERS,
    calls,
    callsFailed,
    firstFailure,
  };
  log(`  reload, ${mode}: ${durations.length}/${p.reloads} reloaded, p50 ${row.p50Ms.toFixed(1)} ms, p95 ${row.p95Ms.toFixed(1)} ms; ${calls} calls meanwhile, ${callsFailed} failed`);
  return row;
}

/**
 * The memory probe of one mode in a child process of its own (`node --expose-gc`), so that
 * a full GC can be forced and one mode's leftovers do not count against the other's. The
 * child is killed if it outlives its deadline.
 */
async function memory(mode: PluginMode, p: Preset, log: (line: string) => void): Promise<MemoryRow> {
  const none = (failure: string): MemoryRow => ({ mode, probe: null, heapKiBPerReload: null, rssKiBPerReload: null, heapKiBPerReloadSecondHalf: null, rssKiBPerReloadSecondHalf: null, failure });
  const timeoutMs = 30_000 + p.reloadMemoryReloads * 500;
  const child = spawn(process.execPath, ['--expose-gc', MEMORY_PROBE, mode, String(p.reloadMemoryReloads)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  let timer: NodeJS.Timeout | undefined;
  let ended: boolean;
  try {
    ended = await Promise.race([
      exited(child).then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => {
          resolve(false);
        }, timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited(child);
    }
  }
  if (!ended) return none(`the memory probe did not end within ${timeoutMs} ms: ${err.trim()}`);
  if (child.exitCode !== 0) return none(`the memory probe exited with ${String(child.exitCode ?? child.signalCode)}: ${err.trim()}`);
  const line = out.split('\n').find((l) => l.startsWith('{'));
  if (line === undefined) return none(`the memory probe printed no result: ${out.trim()} ${err.trim()}`);
  const probe = JSON.parse(line) as MemoryProbe;
  const perReload = (before: number, after: number, n: number): number => (after - before) / 1024 / Math.max(1, n);
  const heap = perReload(probe.heapBefore, probe.heapAfter, probe.reloads);
  const rss = perReload(probe.rssBefore, probe.rssAfter, probe.reloads);
  const secondHalf = probe.reloads - probe.half;
  const row: MemoryRow = {
    mode,
    probe,
    heapKiBPerReload: heap,
    rssKiBPerReload: rss,
    heapKiBPerReloadSecondHalf: perReload(probe.heapHalf, probe.heapAfter, secondHalf),
    rssKiBPerReloadSecondHalf: perReload(probe.rssHalf, probe.rssAfter, secondHalf),
    failure: null,
  };
  log(`  memory, ${mode}: ${probe.reloads} reloads, heap ${heap.toFixed(1)} KiB and RSS ${rss.toFixed(1)} KiB per reload, threads ${probe.threadsBefore} -> ${probe.threadsAfter}`);
  return row;
}

/** The whole part: call costs, then per mode the timed reloads and the memory probe. */
export async function reloadBench(p: Preset, log: (line: string) => void): Promise<ReloadResult> {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-bench-reload-'));
  try {
    const calls = await callCosts(dir, p, log);
    const reloads: ReloadRow[] = [];
    for (const mode of MODES) reloads.push(await timedReloads(mode, dir, p, log));
    const rows: MemoryRow[] = [];
    for (const mode of MODES) rows.push(await memory(mode, p, log));
    if (sink.total === -1) log('unreachable'); // reads the sink, so that the loops' results count
    return { inFlight: IN_FLIGHT, calls, reloads, memory: rows };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
