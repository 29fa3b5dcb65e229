/**
 * The Python reference daemon (apps/kv-python, standard library only) under the real
 * handoff-supervisor: handoffs Python -> Python, Python -> Node kv and Node kv -> Python under
 * load, rollbacks that make it resume, and stops. Real processes, sockets, fsync and load.
 */
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFailed, onTestFinished } from 'vitest';
import { DataDirLock, lockKindsHeldBy } from '@handoff/core';
import type { DaemonCommand } from '@handoff/supervisor';
import { LoadDriver, checkPromises, startCluster, waitUntil } from '../src/index.js';
import type { Cluster, ClusterPaths } from '../src/index.js';
import { freePort, runToExit } from './bin.js';
import { KV_MAIN } from './kv.js';

const KV_PYTHON = fileURLToPath(new URL('../../../apps/kv-python/handoff_kv.py', import.meta.url));
const VECTORS = fileURLToPath(new URL('../../protocol/vectors/v1.json', import.meta.url));

/** The Python daemon as the conformance kit runs it: its data directory comes from HANDOFF_DATA_DIR (the supervisor's data_dir). */
function python(env: Readonly<Record<string, string>> = {}): (paths: ClusterPaths) => DaemonCommand {
  return () => ({ command: 'python3', args: [KV_PYTHON], env: { KV_BUILD_ID: 'py1', ...env } });
}

/** A program change to the Python daemon with build `buildId` and extra environment. */
function toPython(buildId: string, env: Readonly<Record<string, string>> = {}): { daemon: { command: string; args: string[]; env: Record<string, string> } } {
  return { daemon: { command: 'python3', args: [KV_PYTHON], env: { KV_BUILD_ID: buildId, ...env } } };
}

/** A program change to the Node kv daemon. */
function toNode(cluster: Cluster, buildId: string): { daemon: { command: string; args: string[]; env: Record<string, string> } } {
  return { daemon: { command: process.execPath, args: [KV_MAIN], env: { KV_DATA_DIR: cluster.dataDir, KV_BUILD_ID: buildId } } };
}

function printOnFailure(cluster: Cluster): void {
  onTestFailed(() => {
    console.error(`--- supervisor and daemon output (${cluster.dir}) ---\n${cluster.output()}`);
  });
}

function noErrors(load: LoadDriver): void {
  const report = load.report();
  expect(report.errors, JSON.stringify(report.samples)).toEqual({ refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 });
}

/** Every record of kv.log, parsed; the file must end with a newline (no torn tail). */
function logRecords(dataDir: string): { k: string; v: string }[] {
  const text = readFileSync(`${dataDir}/kv.log`, 'utf8');
  expect(text === '' || text.endsWith('\n')).toBe(true);
  return text.split('\n').slice(0, -1).map((line) => JSON.parse(line) as { k: string; v: string });
}

/** One HTTP request on a fresh connection; `onHeaders` hears when the answer's headers came. */
function http(port: number, method: string, path: string, body?: string, onHeaders?: () => void): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      onHeaders?.();
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => {
        resolve({ status: res.statusCode ?? 0, body: text });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

// HANDOFF_PYTHON_TESTS=0: .ci/run's second pass (Node 24), where only the supervisor's Node changed.
describe.skipIf(process.env.HANDOFF_PYTHON_TESTS === '0')('the Python reference daemon', () => {
  it('passes the golden vectors of the protocol (canonical, accept and reject)', async () => {
    const { code, stdout, stderr } = await runToExit(['python3', KV_PYTHON, '--check-vectors', VECTORS], {}, 30_000);
    const output = stdout + stderr;
    expect(output).toMatch(/^\d+ vectors, 0 failures$/m);
    expect(code, output).toBe(0);
  });

  it('cold-starts and hands off Python -> Python under load: a classic POSIX lock, no error, no lost write', async () => {
    await using cluster = await startCluster({ daemon: python() });
    printOnFailure(cluster);
    const first = await cluster.health();
    expect(first?.buildId).toBe('py1');
    expect(lockKindsHeldBy(first?.pid ?? 0, cluster.dataDir)).toEqual(['posix']);
    const load = new LoadDriver({ port: cluster.port, readers: 4, writers: 2, probeEveryMs: 5 }).start();
    await load.waitForProgress(100);
    for (let i = 2; i <= 6; i++) {
      const result = await cluster.handoff(toPython(`py${i}`));
      expect(result, `handoff ${i - 1}`).toMatchObject({ committed: true, outcome: 'committed', abortReason: null });
      await load.waitForProgress(50);
      noErrors(load);
    }
    const after = await cluster.health();
    expect(after?.buildId).toBe('py6');
    expect(after?.pid).not.toBe(first?.pid);
    expect(lockKindsHeldBy(after?.pid ?? 0, cluster.dataDir)).toEqual(['posix']);
    const report = load.report();
    expect(await checkPromises(cluster, load)).toEqual([]);
    console.log(`python -> python, 5 handoffs: ${report.requests} requests, ${report.acknowledgedWrites} acknowledged writes, slowest probe ${report.maxProbeMs} ms, errors ${JSON.stringify(report.errors)}`);
  });

  it('hands off Python -> Node kv -> Python -> Node kv under load: the same data, no error, no lost write', async () => {
    await using cluster = await startCluster({ daemon: python() });
    printOnFailure(cluster);
    const load = new LoadDriver({ port: cluster.port, readers: 4, writers: 2, probeEveryMs: 5 }).start();
    await load.waitForProgress(100);
    const steps: [string, (c: Cluster, b: string) => ReturnType<typeof toNode>][] = [
      ['node-1', toNode],
      ['py-2', (_, b) => toPython(b)],
      ['node-3', toNode],
      ['py-4', (_, b) => toPython(b)],
    ];
    for (const [buildId, change] of steps) {
      const result = await cluster.handoff(change(cluster, buildId));
      expect(result, buildId).toMatchObject({ committed: true, outcome: 'committed' });
      await load.waitForProgress(50);
      noErrors(load);
      const health = await cluster.health();
      expect(health?.buildId).toBe(buildId);
      // Node takes an OFD lock, Python a classic POSIX one: each holds its own kind.
      expect(lockKindsHeldBy(health?.pid ?? 0, cluster.dataDir)).toEqual([buildId.startsWith('node') ? 'ofd' : 'posix']);
    }
    const report = load.report();
    expect(await checkPromises(cluster, load)).toEqual([]);
    // Both wrote the same format: every line a {"k","v"} record, the revision their count.
    const records = logRecords(cluster.dataDir);
    expect((await cluster.health())?.revision).toBe(records.length);
    console.log(`python <-> node, 4 handoffs: ${report.requests} requests, ${report.acknowledgedWrites} acknowledged writes, ${records.length} records, slowest probe ${report.maxProbeMs} ms, errors ${JSON.stringify(report.errors)}`);
  });

  it('Node kv -> Python under load', async () => {
    await using cluster = await startCluster({ daemon: ({ dataDir }) => ({ command: process.execPath, args: [KV_MAIN], env: { KV_DATA_DIR: dataDir, KV_BUILD_ID: 'node-1' } }) });
    printOnFailure(cluster);
    const load = new LoadDriver({ port: cluster.port, readers: 4, writers: 2, probeEveryMs: 5 }).start();
    await load.waitForProgress(100);
    const result = await cluster.handoff(toPython('py-2'));
    expect(result).toMatchObject({ committed: true, outcome: 'committed' });
    await load.waitForProgress(100);
    expect((await cluster.health())?.buildId).toBe('py-2');
    expect(await checkPromises(cluster, load)).toEqual([]);
    noErrors(load);
  });

  it('rolls back to the Python incumbent: a successor that fails to start, a Python or a Node successor whose data is behind the seal', async () => {
    await using cluster = await startCluster({ daemon: python() });
    printOnFailure(cluster);
    const incumbent = await cluster.health();
    const load = new LoadDriver({ port: cluster.port, readers: 4, writers: 2, probeEveryMs: 5 }).start();
    await load.waitForProgress(100);

    // Before anything changed: the successor exits at once.
    const failStart = await cluster.handoff(toPython('py-bad', { KV_FAIL_START: '1' }));
    expect(failStart).toMatchObject({ committed: false, outcome: 'rolledBack' });
    expect(failStart.successorOutput ?? '').toContain('KV_FAIL_START=1');
    await load.waitForProgress(50);

    // After the seal: the incumbent released its lock and closed its log; it re-takes and reopens them.
    const stale = await cluster.handoff(toPython('py-stale', { KV_STALE: '1' }));
    expect(stale).toMatchObject({ committed: false, outcome: 'rolledBack', abortReason: { code: 'HANDOFF_REVISIONS_DIVERGED' } });
    await load.waitForProgress(50);
    expect((await cluster.health())?.pid).toBe(incumbent?.pid);
    expect(cluster.lock()).toMatchObject({ held: true, pid: incumbent?.pid });

    // A Node successor on this data, rolled back the same way.
    const nodeStale = await cluster.handoff({ daemon: { ...toNode(cluster, 'node-stale').daemon, env: { KV_DATA_DIR: cluster.dataDir, KV_BUILD_ID: 'node-stale', KV_STALE: '1' } } });
    expect(nodeStale).toMatchObject({ committed: false, abortReason: { code: 'HANDOFF_REVISIONS_DIVERGED' } });
    await load.waitForProgress(50);
    noErrors(load);
    expect((await cluster.health())?.pid).toBe(incumbent?.pid);
    expect(await checkPromises(cluster, load)).toEqual([]);
  });

  it('a Python incumbent whose seal fails resumes after its drain, and a slow seal or a slow open keeps heartbeating', async () => {
    await using failing = await startCluster({ daemon: python({ KV_SEAL_FAIL: '1' }) });
    printOnFailure(failing);
    const incumbent = await failing.health();
    const load = new LoadDriver({ port: failing.port, readers: 4, writers: 1, probeEveryMs: 5 }).start();
    await load.waitForProgress(50);
    const result = await failing.handoff(toPython('py-2'));
    expect(result).toMatchObject({ committed: false, outcome: 'rolledBack', abortReason: { code: 'HANDOFF_SEAL_FAILED' } });
    expect(result.abortReason?.reason).toContain('KV_SEAL_FAIL=1');
    await load.waitForProgress(50);
    expect((await failing.health())?.pid).toBe(incumbent?.pid);
    expect(await checkPromises(failing, load)).toEqual([]);

    // A seal of 2.5 s with a liveness timeout of 1 s: only heartbeats keep the incumbent alive to the supervisor.
    await using slow = await startCluster({ daemon: python({ KV_SEAL_DELAY_MS: '2500' }) });
    printOnFailure(slow);
    const committed = await slow.handoff(toPython('py-2'));
    expect(committed).toMatchObject({ committed: true, outcome: 'committed' });
    expect(committed.timings.phases.sealing ?? 0).toBeGreaterThanOrEqual(2_500);
    // And a successor that takes 2.5 s to open its data keeps heartbeating too.
    const slowOpen = await slow.handoff(toPython('py-3', { KV_OPEN_DELAY_MS: '2500' }));
    expect(slowOpen).toMatchObject({ committed: true, outcome: 'committed' });
    expect(slowOpen.timings.phases.beginning ?? 0).toBeGreaterThanOrEqual(2_500);
  });

  it('stops on SIGTERM: in-flight requests finish, the log is sealed, the lock released, exit 0', async () => {
    const dataDir = mkdtempSync(`${tmpdir()}/kv-python-`);
    onTestFinished(() => {
      rmSync(dataDir, { recursive: true, force: true });
    });
    const port = await freePort();
    const child: ChildProcessWithoutNullStreams = spawn('python3', [KV_PYTHON], { env: { ...process.env, KV_DATA_DIR: dataDir, KV_PORT: String(port), KV_BUILD_ID: 'bare' } });
    onTestFinished(() => {
      child.kill('SIGKILL');
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    onTestFailed(() => {
      console.error(`--- python daemon output ---\n${output}`);
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await waitUntil('the python daemon to serve', () => output.includes('"event":"serving"'), 15_000, { context: () => output });
    expect((await http(port, 'PUT', '/kv/caf%C3%A9%20au%20lait', 'crème "brûlée"\n')).body).toBe('{"revision":1}');
    expect(await http(port, 'GET', '/kv/caf%C3%A9%20au%20lait')).toEqual({ status: 200, body: 'crème "brûlée"\n' });
    expect((await http(port, 'GET', '/kv/missing')).status).toBe(404);
    expect((await http(port, 'GET', '/kv/%E0%A4%A')).status).toBe(400);
    // /slow sends its headers at once and its body 700 ms later: once the headers came, the
    // request is in the daemon's hands.
    let inFlight = false;
    const slow = http(port, 'GET', '/slow?ms=700', undefined, () => (inFlight = true));
    await waitUntil('the slow request to be in flight', () => inFlight, 5_000);
    child.kill('SIGTERM');
    expect(await slow).toEqual({ status: 200, body: 'slow done' });
    expect(await exited, output).toBe(0);
    expect(output).toContain('"event":"exit"');
    expect(DataDirLock.probe(dataDir).held).toBe(false);
    // Byte for byte what Node's JSON.stringify writes.
    expect(readFileSync(`${dataDir}/kv.log`, 'utf8')).toBe(`${JSON.stringify({ k: 'café au lait', v: 'crème "brûlée"\n' })}\n`);
  });

  it('stops under the supervisor: SIGTERM to the supervisor stops the Python daemon gracefully', async () => {
    await using cluster = await startCluster({ daemon: python() });
    printOnFailure(cluster);
    const load = new LoadDriver({ port: cluster.port, readers: 2, writers: 1, probeEveryMs: 0 }).start();
    await load.waitForProgress(50);
    await load.stop();
    const pid = (await cluster.health())?.pid;
    await cluster.killSupervisor('SIGTERM');
    await waitUntil('the python daemon to exit', () => cluster.daemonPids().length === 0, 15_000, { context: () => cluster.output() });
    expect(cluster.output()).toMatch(new RegExp(`"event":"exit","pid":${String(pid)},"code":0`));
    expect(cluster.lock().held).toBe(false);
    const records = logRecords(cluster.dataDir);
    const last = new Map(records.map((r) => [r.k, r.v]));
    for (const [k, v] of load.ledger) expect(last.get(k), k).toBe(v);
  });
});
