/**
 * The memory probe of the benchmark's hot-reload part, run by reload.ts in a process of its
 * own: `node --expose-gc reload-memory.js <worker|inThread> <reloads>`. Loads a plugin,
 * reloads it {@link MEMORY_WARMUP} times (so that one-time costs — code compiled on first
 * use, V8's caches, libuv's pool — are not counted as growth), samples the collected heap,
 * RSS and OS threads, reloads it `reloads` times more (each a new version written to its
 * file, with a few calls to each), sampling again halfway and at the end, and prints one JSON
 * line ({@link MemoryProbe}). The halfway sample tells growth that goes on (a leak, or
 * in-thread mode's modules) from a plateau reached early (the allocator keeping pages).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { HotPlugin } from '@handoff/reload';
import type { PluginMode } from '@handoff/reload';
import { MEMORY_WARMUP, MODES, pluginSource, word } from './reload.js';
import type { MemoryProbe, Shout } from './reload.js';

/** Calls to each version, so that a version has done some work before it is replaced. */
const CALLS_PER_VERSION = 10;

const mode = process.argv[2] as PluginMode;
const reloads = Number(process.argv[3]);
if (!MODES.includes(mode) || !Number.isInteger(reloads) || reloads < 1) {
  console.error('usage: node --expose-gc reload-memory.js <worker|inThread> <reloads>');
  process.exit(2);
}
const gc = globalThis.gc;
if (gc === undefined) {
  console.error('reload-memory: run with node --expose-gc');
  process.exit(2);
}

const threads = (): number => Number(/^Threads:\s+(\d+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0);

/**
 * Heap, RSS and threads after a full GC. Several rounds with a turn of the event loop between
 * them: finalizers, a terminated worker's release and weak callbacks run between GCs.
 */
async function sample(): Promise<{ heap: number; rss: number; threads: number }> {
  for (let i = 0; i < 4; i++) {
    gc?.();
    await nextTurn();
  }
  const { heapUsed, rss } = process.memoryUsage();
  return { heap: heapUsed, rss, threads: threads() };
}

const dir = mkdtempSync(join(tmpdir(), 'handoff-bench-reload-memory-'));
const file = join(dir, 'plugin.mjs');
let plugin: HotPlugin<Shout> | null = null;
try {
  writeFileSync(file, pluginSource('v0'));
  plugin = await HotPlugin.load<Shout>({ name: `bench-memory-${mode}`, file, methods: ['shout'], mode, probation: { ms: 0, maxFailures: 0 } });
  const loaded = plugin;
  let generation = 0;
  const reloadOnce = async (): Promise<void> => {
    generation++;
    writeFileSync(file, pluginSource(`v${generation}`));
    const report = await loaded.reload();
    if (report.outcome !== 'reloaded') throw new Error(`reload ${generation}: ${report.outcome}: ${report.error ?? ''}`);
    for (let c = 0; c < CALLS_PER_VERSION; c++) await loaded.call('shout', word(c));
  };
  for (let i = 0; i < MEMORY_WARMUP; i++) await reloadOnce();
  const before = await sample();
  const half = Math.floor(reloads / 2);
  const started = performance.now();
  for (let i = 0; i < half; i++) await reloadOnce();
  const mid = await sample();
  for (let i = half; i < reloads; i++) await reloadOnce();
  const seconds = (performance.now() - started) / 1_000;
  const after = await sample();
  const result: MemoryProbe = {
    mode,
    reloads,
    warmup: MEMORY_WARMUP,
    seconds,
    half,
    heapBefore: before.heap,
    heapHalf: mid.heap,
    heapAfter: after.heap,
    rssBefore: before.rss,
    rssHalf: mid.rss,
    rssAfter: after.rss,
    threadsBefore: before.threads,
    threadsAfter: after.threads,
    workersAlive: loaded.stats.workers,
  };
  console.log(JSON.stringify(result));
} catch (error) {
  console.error(`reload-memory: ${(error as Error).stack ?? String(error)}`);
  process.exitCode = 1;
} finally {
  await plugin?.close(5_000);
  rmSync(dir, { recursive: true, force: true });
}
