/**
 * Makes a blocked event loop visible. While a user hook runs (open, seal, a drain, …), an
 * unref'd interval timer measures how late it fires; the first time the loop was blocked
 * for longer than the threshold, one line goes to stderr at once, naming the hook and the
 * block — a daemon that blocks its loop sends no heartbeat meanwhile, and its supervisor
 * takes it for dead after the liveness timeout (PROTOCOL.md §9).
 *
 * A late timer is the hook's doing only as far as the thread was running or in a blocking
 * call (a synchronous read, an fsync) meanwhile, not waiting for a CPU (a loaded host, a
 * lowered priority), which the kernel tells (Linux: `/proc/thread-self/schedstat`): a block
 * is reported when the timer was late past the threshold and at least a quarter of the
 * threshold of it was the thread's own — so that a starved process whose hooks yield is not
 * told to slice them. The line gives the whole block: heartbeats stopped that long.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

/** Nanoseconds this thread has waited for a CPU so far; null where the kernel does not say. */
function runQueueWaitNs(): number | null {
  try {
    const fields = readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ');
    const wait = Number(fields[1]);
    return Number.isFinite(wait) ? wait : null;
  } catch {
    return null;
  }
}

/** Options of {@link watchLoop}. */
export interface LoopWatchOptions {
  /** A block longer than this is reported. */
  readonly thresholdMs: number;
  /** The supervisor's liveness timeout, named in the line. */
  readonly livenessMs: number;
  /** How often the timer fires. Default: a quarter of the threshold, within 10–100 ms. */
  readonly intervalMs?: number;
  /** Where the line goes. Default: stderr. */
  readonly write?: (line: string) => void;
}

/** A duration as people read it: `400 ms`, `3.4 s`, `3 s`. */
export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 100) / 10;
  return `${Number.isInteger(s) ? s.toFixed(0) : s.toFixed(1)} s`;
}

/** The line reported for a hook that blocked the loop for `blockedMs`. */
export function blockedLine(hook: string, blockedMs: number, livenessMs: number): string {
  return (
    `handoff: ${hook} blocked the event loop for ${formatDuration(blockedMs)} ` +
    `(heartbeats stop while it is blocked; the supervisor's liveness timeout is ${formatDuration(livenessMs)}): ` +
    'do long work in slices or off the main thread — PROTOCOL.md §9'
  );
}

/** Watches the event loop until {@link LoopWatch.stop}. */
export class LoopWatch {
  readonly #hook: string;
  readonly #options: LoopWatchOptions;
  readonly #intervalMs: number;
  readonly #timer: NodeJS.Timeout;
  #last = performance.now();
  #lastWait = runQueueWaitNs();
  #longest = 0;
  #reported = false;

  constructor(hook: string, options: LoopWatchOptions) {
    this.#hook = hook;
    this.#options = options;
    this.#intervalMs = options.intervalMs ?? Math.max(10, Math.min(100, options.thresholdMs / 4));
    this.#timer = setInterval(() => {
      this.#check();
    }, this.#intervalMs);
    this.#timer.unref();
  }

  /** The longest block of the thread's own seen so far, in ms (how late the timer fired, less any wait for a CPU). */
  get longestMs(): number {
    return this.#longest;
  }

  #check(): void {
    const now = performance.now();
    const wait = runQueueWaitNs();
    // Late by this much, less the time the thread waited for a CPU meanwhile.
    const starvedMs = wait !== null && this.#lastWait !== null ? (wait - this.#lastWait) / 1e6 : 0;
    const late = now - this.#last - this.#intervalMs;
    const own = late - starvedMs;
    this.#last = now;
    this.#lastWait = wait;
    if (own > this.#longest) this.#longest = own;
    const { thresholdMs } = this.#options;
    if (late > thresholdMs && own > thresholdMs / 4 && !this.#reported) {
      this.#reported = true;
      const line = blockedLine(this.#hook, late, this.#options.livenessMs);
      if (this.#options.write) this.#options.write(line);
      else process.stderr.write(`${line}\n`);
    }
  }

  /** Stops watching; a block that ended just before (with no timer turn since) still counts. */
  stop(): void {
    clearInterval(this.#timer);
    this.#check();
  }
}

/** Runs `hook` while watching the event loop (see {@link LoopWatch}). */
export async function watchLoop<T>(hook: string, run: () => Promise<T>, options: LoopWatchOptions): Promise<T> {
  const watch = new LoopWatch(hook, options);
  try {
    return await run();
  } finally {
    watch.stop();
  }
}
