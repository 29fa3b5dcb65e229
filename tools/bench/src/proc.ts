/** Process and socket helpers of the benchmark: free ports, readiness, exits, /proc sampling. */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A port the kernel just handed out on 127.0.0.1 (closed again, so it is free). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

/** One GET on a fresh connection: true on a 2xx. */
export function answers(port: number, path = '/health', timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume().on('end', () => { resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300); });
    });
    req.setTimeout(timeoutMs, () => req.destroy());
    req.on('error', () => { resolve(false); });
    req.end();
  });
}

/** Resolves when the child has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => { resolve(); }));
}

export function readPid(file: string): number | null {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

const TICKS_PER_SECOND = 100; // CLK_TCK on Linux

/** CPU seconds (user + system) and resident memory of a live pid, from /proc; null once gone. */
export function readProc(pid: number): { cpuSeconds: number; rssBytes: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name: state is field 3; utime, stime are 14, 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
    const rssKb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return { cpuSeconds, rssBytes: Number(rssKb ?? 0) * 1024 };
  } catch {
    return null;
  }
}

/**
 * Samples the CPU time and resident memory of a changing set of processes (a supervisor, or
 * nginx's masters during a binary upgrade) every `everyMs` until stopped.
 */
export class ProcSampler {
  readonly #pids: () => readonly number[];
  readonly #last = new Map<number, number>();
  #cpuSeconds = 0;
  #peakRss = 0;
  #timer: NodeJS.Timeout | undefined;
  #startedAt = 0;

  constructor(pids: () => readonly number[]) {
    this.#pids = pids;
  }

  start(everyMs = 100): this {
    this.#startedAt = Date.now();
    this.#sample();
    this.#timer = setInterval(() => { this.#sample(); }, everyMs);
    return this;
  }

  /** Stops and reports: CPU seconds used while sampled, as a share of one core, and peak RSS. */
  stop(): { cpuSeconds: number; cpuPercent: number; peakRssBytes: number } | null {
    this.#sample();
    clearInterval(this.#timer);
    if (this.#last.size === 0) return null;
    const seconds = Math.max((Date.now() - this.#startedAt) / 1000, 0.001);
    return { cpuSeconds: this.#cpuSeconds, cpuPercent: (100 * this.#cpuSeconds) / seconds, peakRssBytes: this.#peakRss };
  }

  #sample(): void {
    let rss = 0;
    for (const pid of this.#pids()) {
      const p = readProc(pid);
      if (p === null) continue;
      const before = this.#last.get(pid);
      if (before !== undefined) this.#cpuSeconds += p.cpuSeconds - before;
      this.#last.set(pid, p.cpuSeconds);
      rss += p.rssBytes;
    }
    this.#peakRss = Math.max(this.#peakRss, rss);
  }
}
