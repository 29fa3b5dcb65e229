/**
 * Preloaded handoffs of the example kv daemon (issue 13): the successor reads the log before
 * its Hello, read-only, while the incumbent still serves and writes, and after Begin replays
 * only the tail — real processes through the real supervisor binary, under load.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, onTestFailed } from 'vitest';
import { LoadDriver, checkPromises, startCluster, verifyLedger } from '../src/index.js';
import type { Cluster } from '../src/index.js';
import { kv } from './kv.js';

/** The kv daemon's own lines on stdout: `{"event":…}`. */
function kvEvents(output: string, event: string): Record<string, unknown>[] {
  const start = `{"event":"${event}"`;
  return output
    .split('\n')
    .filter((line) => line.includes(start))
    .map((line) => JSON.parse(line.slice(line.indexOf(start))) as Record<string, unknown>);
}

/** A cluster whose data directory holds `keys` records before the first daemon starts. */
function seededCluster(keys: number, env: Readonly<Record<string, string>> = {}): Promise<Cluster> {
  return startCluster({
    daemon: kv(env),
    prepare: ({ dataDir }) => {
      const lines: string[] = [];
      for (let i = 0; i < keys; i++) lines.push(`${JSON.stringify({ k: `seed-${i}`, v: `value-${i}-${'x'.repeat(16)}` })}\n`);
      writeFileSync(join(dataDir, 'kv.log'), lines.join(''));
    },
  });
}

const SEED = 20_000;

describe('preloaded handoffs of the kv daemon', () => {
  it('20 preloaded handoffs under load, writers running through each preload: no refused or reset connection, no lost write, one writer', async () => {
    await using cluster = await seededCluster(SEED);
    onTestFailed(() => {
      console.error(`--- supervisor and daemon output (${cluster.dir}) ---\n${cluster.output()}`);
    });
    const load = new LoadDriver({ port: cluster.port, readers: 4, writers: 2, probeEveryMs: 5 }).start();
    await load.waitForProgress(50);
    for (let i = 0; i < 20; i++) {
      const result = await cluster.handoff({ daemon: { env: { KV_BUILD_ID: `v${i + 2}` } } });
      expect(result, `handoff ${i + 1}`).toMatchObject({ committed: true, outcome: 'committed' });
      await load.waitForProgress(20);
    }
    const report = await load.stop();
    console.log(
      `20 preloaded handoffs of ${SEED} keys: ${report.requests} requests, ${report.acknowledgedWrites} acknowledged writes; ` +
        `slowest fresh connection ${report.maxProbeMs} ms; errors ${JSON.stringify(report.errors)}`,
    );
    expect(report.errors, JSON.stringify(report.samples)).toEqual({ refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 });
    expect(report.acknowledgedWrites).toBeGreaterThan(0);
    // One serving daemon holding the lock, reported by the supervisor; every acknowledged write readable.
    expect(await checkPromises(cluster, null)).toEqual([]);
    expect(await verifyLedger(cluster.port, load.ledger, '127.0.0.1', load.writePrefix)).toEqual([]);

    // Every successor preloaded (the seed at least) and caught up on the tail only.
    const output = cluster.output();
    const preloaded = kvEvents(output, 'preloaded');
    const caughtUp = kvEvents(output, 'caught-up');
    expect(preloaded).toHaveLength(20);
    expect(caughtUp).toHaveLength(20);
    const ms = (events: Record<string, unknown>[]): number[] => events.map((e) => Number(e.ms)).sort((a, b) => a - b);
    console.log(
      `preload (before Hello, while the incumbent serves): median ${ms(preloaded)[10]} ms; catch-up (after Begin): median ${ms(caughtUp)[10]} ms, ` +
        `max ${ms(caughtUp)[19]} ms, tail records ${caughtUp.map((c) => Number(c.records)).join(' ')}`,
    );
    for (const p of preloaded) expect(p.revision).toBeGreaterThanOrEqual(SEED);
    for (const c of caughtUp) expect(c).toMatchObject({ reason: 'takeover', mode: 'tail' });
    // Writes acknowledged after a successor's preload read the log reached it through its catch-up.
    expect(caughtUp.reduce((n, c) => n + Number(c.records), 0)).toBeGreaterThan(0);
    expect(kvEvents(output, 'opened').filter((o) => o.reason === 'takeover')).toEqual([]);
    expect(output).not.toContain('blocked the event loop');
    expect((await cluster.health())?.buildId).toBe('v21');
  });

  it('a failed or overrunning preload falls back to open after Begin, with one line saying so; KV_PRELOAD=0 opens after Begin', async () => {
    await using cluster = await seededCluster(1_000);
    onTestFailed(() => {
      console.error(`--- supervisor and daemon output (${cluster.dir}) ---\n${cluster.output()}`);
    });
    const load = new LoadDriver({ port: cluster.port, readers: 2, writers: 1, probeEveryMs: 5 }).start();
    await load.waitForProgress(20);
    expect(await cluster.handoff({ daemon: { env: { KV_BUILD_ID: 'v2', KV_PRELOAD_FAIL: '1' } } })).toMatchObject({ committed: true });
    await load.waitForProgress(20);
    expect(await cluster.handoff({ daemon: { env: { KV_BUILD_ID: 'v3', KV_PRELOAD_FAIL: '0', KV_PRELOAD: '0' } } })).toMatchObject({ committed: true });
    await load.waitForProgress(20);
    // A preload that ignores its signal (a 5 s sleep) past preloadMs and the grace: Hello without it.
    expect(await cluster.handoff({ daemon: { env: { KV_BUILD_ID: 'v4', KV_PRELOAD: '1', KV_PRELOAD_MS: '300', KV_PRELOAD_DELAY_MS: '5000' } } })).toMatchObject({ committed: true });
    await load.waitForProgress(20);
    expect(await checkPromises(cluster, load)).toEqual([]);
    const output = cluster.output();
    expect(output.match(/^handoff: preload\(\) failed: .*$/gm)).toEqual(['handoff: preload() failed: preload failed (KV_PRELOAD_FAIL=1); the data will be opened in full with open() after Begin']);
    expect(output).not.toMatch(/^\s*at /m); // no stack trace
    expect(output).toMatch(/^handoff: preload\(\) went on for more than 1000 ms after its signal \(preloadMs 300 ms from the start\); the successor says Hello without it and opens the data in full with open\(\) after Begin$/m);
    expect(kvEvents(output, 'opened').filter((o) => o.reason === 'takeover')).toHaveLength(3);
    expect(kvEvents(output, 'caught-up')).toEqual([]);
  });
});
