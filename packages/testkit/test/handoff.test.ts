/**
 * Real handoffs of the example kv daemon: real processes, sockets, fsync and load.
 */
import { Agent, request } from 'node:http';
import { describe, expect, it, onTestFailed } from 'vitest';
import { LoadDriver, checkPromises, startCluster } from '../src/index.js';
import { kv } from './kv.js';
import type { Cluster } from '../src/index.js';

function printOnFailure(cluster: Cluster): void {
  onTestFailed(() => {
    console.error(`--- supervisor and daemon output (${cluster.dir}) ---\n${cluster.output()}`);
  });
}

describe('handoff of a stateful daemon', () => {
  it('commits: the new pid holds the lock and serves, and every acknowledged write is readable', async () => {
    await using cluster = await startCluster({ daemon: kv() });
    printOnFailure(cluster);
    const before = await cluster.health();
    const load = new LoadDriver({ port: cluster.port, readers: 2, writers: 1 }).start();
    await load.waitForProgress(50);
    const result = await cluster.handoff({ daemon: { env: { KV_DATA_DIR: cluster.dataDir, KV_BUILD_ID: 'v2' } } });
    await load.waitForProgress(50);
    const report = load.report();
    expect(result).toMatchObject({ committed: true, outcome: 'committed', abortReason: null });
    const after = await cluster.health();
    expect(after?.buildId).toBe('v2');
    expect(after?.pid).not.toBe(before?.pid);
    expect(result.incumbentPid).toBe(after?.pid);
    expect(cluster.lock()).toMatchObject({ held: true, pid: after?.pid });
    expect(report.acknowledgedWrites).toBeGreaterThan(0);
    expect(await checkPromises(cluster, load)).toEqual([]);
    expect(Object.keys(result.timings.phases)).toEqual(expect.arrayContaining(['spawning', 'awaitingHello', 'preparing', 'sealing', 'beginning']));
  });

  it('hands off 20 times under continuous load with no refused, reset or failed request and no lost write', async () => {
    await using cluster = await startCluster({ daemon: kv() });
    printOnFailure(cluster);
    const load = new LoadDriver({ port: cluster.port, readers: 8, writers: 2, probeEveryMs: 5 }).start();
    await load.waitForProgress(100);
    for (let i = 0; i < 20; i++) {
      const result = await cluster.handoff({ daemon: { env: { KV_DATA_DIR: cluster.dataDir, KV_BUILD_ID: `v${i + 2}` } } });
      expect(result, `handoff ${i + 1}`).toMatchObject({ committed: true });
      await load.waitForProgress(20);
    }
    const report = await load.stop();
    console.log(
      `20 handoffs: ${report.requests} requests (${report.byRole.reader.ok} keep-alive reads, ${report.probes} fresh-connection probes, ` +
        `${report.acknowledgedWrites} acknowledged writes); slowest probe ${report.maxProbeMs} ms; errors ${JSON.stringify(report.errors)}`,
    );
    expect(report.errors, JSON.stringify(report.samples)).toEqual({ refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 });
    expect(report.byRole.prober.ok).toBeGreaterThan(100);
    expect(await checkPromises(cluster, load)).toEqual([]);
    expect((await cluster.health())?.buildId).toBe('v21');
  });

  it("honours the supervisor's drain grace where connections do not move: an idle keep-alive connection is closed only after it, and the handoff commits", async () => {
    const drainGraceMs = 2_500; // more than the daemon's own default (1 s), which it used to apply instead
    await using cluster = await startCluster({ daemon: kv(), timeouts: { drainGraceMs }, moveConnections: false });
    printOnFailure(cluster);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      // (Wrapped: resolving with a bare promise would wait for it.)
      const { closed } = await new Promise<{ closed: Promise<void> }>((resolve, reject) => {
        request({ host: '127.0.0.1', port: cluster.port, path: '/health', agent }, (res) => {
          const socket = res.socket;
          res.resume().on('end', () => {
            resolve({ closed: new Promise((done) => socket.once('close', () => { done(); })) });
          });
        })
          .on('error', reject)
          .end();
      });
      const result = await cluster.handoff();
      expect(result).toMatchObject({ committed: true });
      await closed; // the old daemon closed the idle connection
      expect(result.timings.phases.preparing ?? 0).toBeGreaterThanOrEqual(drainGraceMs);
    } finally {
      agent.destroy();
    }
  });
});
