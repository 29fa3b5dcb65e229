/**
 * Faults of the new program, slow hooks, concurrent requests and leaks, with real processes.
 */
import { fileURLToPath } from 'node:url';
import { request } from 'node:http';
import { describe, expect, it, onTestFailed } from 'vitest';
import { LoadDriver, checkPromises, startCluster } from '../src/index.js';
import { kv } from './kv.js';
import type { Cluster } from '../src/index.js';

function printOnFailure(cluster: Cluster): void {
  onTestFailed(() => {
    console.error(`--- output (${cluster.dir}) ---\n${cluster.output()}\n--- events ---\n${cluster.events.map((e) => JSON.stringify(e)).join("\n")}`);
  });
}

/** A handoff to the kv daemon with extra environment for the new program. */
function upgradeTo(env: Record<string, string> = {}, buildId = 'v2') {
  return { daemon: { env: { KV_BUILD_ID: buildId, ...env } } };
}

/** A slow request: `started` resolves once the daemon has it (headers received), `done` with its answer. */
function slowGet(port: number, ms: number): { started: Promise<void>; done: Promise<{ status: number; body: string }> } {
  let started: () => void = () => undefined;
  const startedP = new Promise<void>((resolve) => {
    started = resolve;
  });
  const done = new Promise<{ status: number; body: string }>((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: `/slow?ms=${ms}`, agent: false }, (res) => {
      started();
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        resolve({ status: res.statusCode ?? 0, body });
      });
    })
      .on('error', reject)
      .end();
  });
  return { started: startedP, done };
}

describe('faults of the new program roll back; the incumbent serves on', () => {
  // The second case fails after the seal, so the incumbent listens again each time: four times, more than its two reserve copies.
  const cases: [string, Record<string, string>, string, number][] = [
    ['a successor that exits at start', { KV_FAIL_START: '1' }, 'HANDOFF_SUCCESSOR_EXITED', 1],
    ['a successor whose data does not continue the sealed revisions, four times in a row', { KV_STALE: '1' }, 'HANDOFF_REVISIONS_DIVERGED', 4],
  ];
  for (const [what, env, code, times] of cases) {
    it(`aborts ${what}`, async () => {
      await using cluster = await startCluster({ daemon: kv() });
      printOnFailure(cluster);
      const before = await cluster.health();
      const load = new LoadDriver({ port: cluster.port, readers: 4, writers: 1 }).start();
      await load.waitForProgress(20);
      for (let i = 0; i < times; i++) {
        const result = await cluster.handoff(upgradeTo(env));
        expect(result).toMatchObject({ committed: false, outcome: 'rolledBack', abortReason: { code } });
        expect(result.incumbentPid).toBe(before?.pid);
        await load.waitForProgress(20);
      }
      expect(await checkPromises(cluster, load)).toEqual([]);
      expect((await cluster.health())?.pid).toBe(before?.pid);
      expect(await cluster.handoff(upgradeTo())).toMatchObject({ committed: true });
    });
  }

  it('rolls back a failing seal: the incumbent keeps its lock and serves on', async () => {
    await using cluster = await startCluster({ daemon: kv() });
    printOnFailure(cluster);
    // The incumbent must be the program whose seal fails.
    expect(await cluster.handoff(upgradeTo({ KV_SEAL_FAIL: '1' }))).toMatchObject({ committed: true });
    const incumbent = await cluster.health();
    const load = new LoadDriver({ port: cluster.port, readers: 4, writers: 1 }).start();
    await load.waitForProgress(20);
    const result = await cluster.handoff(upgradeTo({}, 'v3'));
    expect(result).toMatchObject({ committed: false, outcome: 'rolledBack', abortReason: { code: 'HANDOFF_SEAL_FAILED', reason: expect.stringContaining('KV_SEAL_FAIL') } });
    await load.waitForProgress(20);
    expect(await checkPromises(cluster, load)).toEqual([]);
    expect(cluster.lock()).toMatchObject({ held: true, pid: incumbent?.pid });
  });

  it('refuses a successor with a disjoint protocol range before the incumbent is touched, with a clear error', async () => {
    await using cluster = await startCluster({ daemon: kv() });
    printOnFailure(cluster);
    const before = await cluster.health();
    const foreign = fileURLToPath(new URL('fixtures/v2-only-successor.js', import.meta.url));
    const result = await cluster.handoff({ daemon: { command: process.execPath, args: [foreign] } });
    expect(result).toMatchObject({ committed: false, outcome: 'rolledBack', abortReason: { code: 'HANDOFF_VERSION_MISMATCH' } });
    expect(result.abortReason?.reason).toMatch(/do not overlap.*1\.\.1.*2\.\.3/);
    // Never asked to drain: no PrepareHandoff was sent.
    expect(result.timings.phases.preparing).toBeUndefined();
    expect((await cluster.health())?.pid).toBe(before?.pid);
  });
});

describe('slow hooks and concurrency', () => {
  it('commits when drain and seal each take longer than the liveness timeout (heartbeats keep both alive)', async () => {
    await using cluster = await startCluster({ daemon: kv() });
    printOnFailure(cluster);
    // The incumbent's seal takes 2.5 s (liveness 1 s); a request in flight keeps drain busy 2.5 s.
    expect(await cluster.handoff(upgradeTo({ KV_SEAL_DELAY_MS: '2500' }))).toMatchObject({ committed: true });
    const load = new LoadDriver({ port: cluster.port, readers: 4, writers: 1 }).start();
    await load.waitForProgress(20);
    const slow = slowGet(cluster.port, 2_500);
    await slow.started; // the incumbent has the request before the drain starts
    const result = await cluster.handoff(upgradeTo({}, 'v3'));
    expect(result).toMatchObject({ committed: true, outcome: 'committed' });
    expect(result.timings.phases.preparing).toBeGreaterThan(1_000);
    expect(result.timings.phases.sealing).toBeGreaterThan(1_000);
    expect(await slow.done).toEqual({ status: 200, body: 'slow done' });
    expect(await checkPromises(cluster, load)).toEqual([]);
  });

  it("commits when the successor's takeover blocks its event loop past the liveness timeout: working on the CPU is not dead, and both sides say so", async () => {
    await using cluster = await startCluster({ daemon: kv() });
    printOnFailure(cluster);
    const load = new LoadDriver({ port: cluster.port, readers: 2, writers: 1, probeEveryMs: 10 }).start();
    await load.waitForProgress(20);
    // Its catch-up (after Begin) runs 3 s of synchronous work: no heartbeat for 3 × the liveness timeout.
    const result = await cluster.handoff(upgradeTo({ KV_OPEN_BLOCK_MS: '3000' }));
    expect(result).toMatchObject({ committed: true, outcome: 'committed' });
    expect(result.timings.phases.beginning).toBeGreaterThan(1_000);
    // The supervisor logged that it found the silent successor at work; the library named the hook.
    expect(cluster.events.some((e) => e.msg === 'peer-busy' && e.peer === 'successor')).toBe(true);
    expect(cluster.output()).toMatch(/handoff: catchUp\(\) blocked the event loop for [\d.]+ s/);
    expect(await checkPromises(cluster, load)).toEqual([]);
  });

  it('aborts a successor blocked past the ready deadline, saying it was busy without a word, and the incumbent serves on', async () => {
    await using cluster = await startCluster({ daemon: kv(), timeouts: { readyMs: 2_000 } });
    printOnFailure(cluster);
    const before = await cluster.health();
    const result = await cluster.handoff(upgradeTo({ KV_OPEN_BLOCK_MS: '6000' }));
    expect(result).toMatchObject({ committed: false, outcome: 'rolledBack', abortReason: { code: 'HANDOFF_PHASE_TIMEOUT' } });
    expect(result.abortReason?.reason).toMatch(/the successor was busy on the CPU without sending anything for [\d.]+ s/);
    expect((await cluster.health())?.pid).toBe(before?.pid);
  });

  it('answers a second handoff with a typed in-progress error, leaving the first unaffected', async () => {
    await using cluster = await startCluster({ daemon: kv() });
    printOnFailure(cluster);
    const first = cluster.handoffReply(upgradeTo());
    const second = await cluster.handoffReply(upgradeTo({}, 'v3'));
    expect(second).toMatchObject({ ok: false, error: { code: 'HANDOFF_IN_PROGRESS', message: expect.stringMatching(/in progress.*wait for its outcome/) } });
    expect(await first).toMatchObject({ ok: true, value: { committed: true } });
    expect((await cluster.health())?.buildId).toBe('v2');
  });
});
