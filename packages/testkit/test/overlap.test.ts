/**
 * Overlap handoffs of a daemon without a data directory (PROTOCOL.md section 7, "Overlap"),
 * through the real supervisor binary configured without data_dir: the successor accepts
 * before the incumbent stops, so a fresh connection never waits for a drain.
 */
import { Agent, request } from 'node:http';
import { describe, expect, it, onTestFailed } from 'vitest';
import { LoadDriver, checkPromises, startCluster } from '../src/index.js';
import type { Cluster } from '../src/index.js';
import { stateless } from './stateless.js';

function printOnFailure(cluster: Cluster): void {
  onTestFailed(() => {
    console.error(`--- supervisor and daemon output (${cluster.dir}) ---\n${cluster.output()}`);
  });
}

/** GET `path` on a fresh connection: the status and body, or the error's code. */
function get(port: number, path: string): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: new Agent({ keepAlive: false }) }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('error', (error: NodeJS.ErrnoException) => {
      resolve({ error: error.code ?? error.message });
    });
    req.end();
  });
}

describe('overlap handoffs of a daemon without a data directory', () => {
  it('hands off 20 times under load: the successor accepts before the incumbent stops; nothing refused, reset or failed', async () => {
    await using cluster = await startCluster({ daemon: stateless(), stateless: true });
    printOnFailure(cluster);
    const load = new LoadDriver({ port: cluster.port, readers: 8, writers: 0, probeEveryMs: 5 }).start();
    await load.waitForProgress(100);
    let pid = (await cluster.health())?.pid;
    for (let i = 0; i < 20; i++) {
      const result = await cluster.handoff({ daemon: { env: { STATELESS_BUILD_ID: `v${i + 2}` } } });
      expect(result, `handoff ${i + 1}`).toMatchObject({ committed: true, outcome: 'committed', abortReason: null });
      // No drain and no seal before the commit point: the incumbent was never asked to stop accepting.
      expect(Object.keys(result.timings.phases), `handoff ${i + 1}`).not.toContain('preparing');
      expect(Object.keys(result.timings.phases)).not.toContain('sealing');
      expect(result.incumbentPid).not.toBe(pid);
      pid = result.incumbentPid ?? undefined;
      await load.waitForProgress(20);
    }
    expect(await checkPromises(cluster, load)).toEqual([]);
    const report = load.report();
    console.log(`20 overlap handoffs: ${report.requests} requests (${report.probes} fresh-connection probes); slowest probe ${report.maxProbeMs} ms; errors ${JSON.stringify(report.errors)}`);
    expect(report.byRole.prober.ok).toBeGreaterThan(100);
    expect((await cluster.health())?.buildId).toBe('v21');
  });

  it('lets the old incumbent finish a request in flight after it was told to stop, while the successor serves new ones', async () => {
    await using cluster = await startCluster({ daemon: stateless(), stateless: true });
    printOnFailure(cluster);
    const old = await cluster.health();
    // Answered only once the old incumbent was told to stop: after the commit point.
    const slow = get(cluster.port, '/slow?untilStop');
    await cluster.waitFor('the slow request to be in flight', () => cluster.output().includes(`stateless-daemon ${String(old?.pid)}: slow request started`));
    const result = await cluster.handoff({ daemon: { env: { STATELESS_BUILD_ID: 'v2' } } });
    expect(result).toMatchObject({ committed: true });
    const answer = await slow;
    expect(answer).toMatchObject({ status: 200 });
    expect(JSON.parse((answer as { body: string }).body)).toMatchObject({ pid: old?.pid, buildId: 'v1' });
    // Until its own connections are gone the stopping incumbent may still answer a fresh one (once).
    await cluster.waitFor('the old incumbent to exit', () => !cluster.daemonPids().includes(old?.pid ?? -1));
    expect(await cluster.health()).toMatchObject({ buildId: 'v2' });
  });

  it('rolls back a successor that fails to start: the incumbent, never asked to stop, serves on', async () => {
    await using cluster = await startCluster({ daemon: stateless(), stateless: true });
    printOnFailure(cluster);
    const before = await cluster.health();
    const load = new LoadDriver({ port: cluster.port, readers: 4, writers: 0, probeEveryMs: 5 }).start();
    await load.waitForProgress(20);
    const result = await cluster.handoff({ daemon: { env: { STATELESS_FAIL_AT_START: '1' } } });
    expect(result).toMatchObject({ committed: false, outcome: 'rolledBack' });
    expect(await checkPromises(cluster, load)).toEqual([]);
    expect((await cluster.health())?.pid).toBe(before?.pid);
  });
});
