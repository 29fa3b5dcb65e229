import { describe, expect, it } from 'vitest';
import { blockedLine, formatDuration, watchLoop } from './loop-watch.js';

/** Blocks the event loop until this process has used `ms` of CPU time (however loaded the machine). */
function busyWait(ms: number): void {
  const start = process.cpuUsage();
  for (;;) {
    const used = process.cpuUsage(start);
    if ((used.user + used.system) / 1_000 >= ms) return;
  }
}

describe('watchLoop', () => {
  it('reports a hook that blocks the event loop, naming it and the block', async () => {
    const lines: string[] = [];
    const result = await watchLoop(
      'open()',
      () => {
        busyWait(400);
        return Promise.resolve('opened');
      },
      { thresholdMs: 100, livenessMs: 300, write: (line) => lines.push(line) },
    );
    expect(result).toBe('opened');
    expect(lines).toHaveLength(1);
    // The whole block is named, also when a loaded machine stretched it past a second ("1.7 s").
    expect(lines[0]).toMatch(/^handoff: open\(\) blocked the event loop for (\d+ ms|\d+(\.\d)? s) \(heartbeats stop while it is blocked; the supervisor's liveness timeout is 300 ms\): do long work in slices or off the main thread — PROTOCOL\.md §9$/);
    const [, amount = '0', unit] = /for ([\d.]+) (ms|s) /.exec(lines[0] ?? '') ?? [];
    expect(Number(amount) * (unit === 's' ? 1_000 : 1)).toBeGreaterThanOrEqual(200);
  });

  it('reports a block in the middle of a hook at once, while the hook still runs, and only once', async () => {
    const lines: string[] = [];
    let reportedWhileRunning = false;
    let onReport: () => void = () => undefined;
    const reported = new Promise<void>((resolve) => {
      onReport = resolve;
    });
    await watchLoop(
      'seal()',
      async () => {
        busyWait(300);
        // The next turns of the loop: the timer fires and reports (a kill deadline, not a wait).
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([reported, new Promise((resolve) => (timer = setTimeout(resolve, 5_000)))]);
        clearTimeout(timer);
        reportedWhileRunning = lines.length === 1;
        busyWait(300); // a second block: no second line
      },
      {
        thresholdMs: 100,
        livenessMs: 3_000,
        write: (line) => {
          lines.push(line);
          onReport();
        },
      },
    );
    expect(reportedWhileRunning).toBe(true);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('handoff: seal() blocked the event loop for ');
  });

  it('says nothing about a hook that yields to the event loop', async () => {
    const lines: string[] = [];
    await watchLoop(
      'catchUp()',
      async () => {
        const end = Date.now() + 400;
        while (Date.now() < end) {
          busyWait(2);
          await new Promise((resolve) => setImmediate(resolve));
        }
      },
      { thresholdMs: 300, livenessMs: 900, write: (line) => lines.push(line) },
    );
    expect(lines).toEqual([]);
  });

  it('reports a hook blocked in a synchronous call that uses no CPU (a slow fsync, a sync read) too', async () => {
    const lines: string[] = [];
    await watchLoop(
      'seal()',
      () => {
        const shared = new Int32Array(new SharedArrayBuffer(4));
        Atomics.wait(shared, 0, 0, 400); // asleep in the kernel, the event loop blocked
        return Promise.resolve();
      },
      { thresholdMs: 100, livenessMs: 300, write: (line) => lines.push(line) },
    );
    expect(lines).toHaveLength(1);
    expect(Number(/for (\d+) ms/.exec(lines[0] ?? '')?.[1])).toBeGreaterThanOrEqual(200);
  });

  it('passes on the error of a hook that fails, and stops watching', async () => {
    const lines: string[] = [];
    await expect(watchLoop('preload()', () => Promise.reject(new Error('no data')), { thresholdMs: 100, livenessMs: 300, write: (line) => lines.push(line) })).rejects.toThrow('no data');
    expect(lines).toEqual([]);
  });
});

describe('formatDuration', () => {
  it('reads as people write durations', () => {
    expect(formatDuration(400)).toBe('400 ms');
    expect(formatDuration(3_000)).toBe('3 s');
    expect(formatDuration(3_420)).toBe('3.4 s');
    expect(blockedLine('open()', 3_400, 3_000)).toBe(
      "handoff: open() blocked the event loop for 3.4 s (heartbeats stop while it is blocked; the supervisor's liveness timeout is 3 s): do long work in slices or off the main thread — PROTOCOL.md §9",
    );
  });
});
