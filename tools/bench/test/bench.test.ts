/**
 * A smoke test of the benchmark harness: `pnpm bench --quick` must run every installed
 * system, count requests, show this project's rows with 0 errors and 0 lost writes, reload
 * `@handoff/reload` plugins with 0 failed calls, and exit 0 because every handoff committed
 * and every reload reloaded. No timing is asserted: the figures are the benchmark's to
 * report, not the suite's to judge.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUICK } from '../src/run.js';
import type { BenchResult } from '../src/report.js';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx'].some((p) => existsSync(p));

// HANDOFF_BENCH_TESTS=0: .ci/run's second pass (Node 24) leaves the harness's smoke run to the first.
describe.skipIf(process.env.HANDOFF_BENCH_TESTS === '0')('pnpm bench --quick', () => {
  const out = mkdtempSync(join(tmpdir(), 'handoff-bench-test-'));
  let output = '';
  let stderr = '';
  let code: number | null = null;
  let result: BenchResult;

  beforeAll(async () => {
    const child = spawn(process.execPath, [MAIN, '--quick', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      output += d.toString();
      stderr += d.toString();
    });
    const deadline = setTimeout(() => child.kill('SIGINT'), 400_000);
    code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    clearTimeout(deadline);
    if (existsSync(join(out, 'bench.json'))) result = JSON.parse(readFileSync(join(out, 'bench.json'), 'utf8')) as BenchResult;
  }, 420_000);

  afterAll(() => {
    rmSync(out, { recursive: true, force: true });
  });

  it('completes, exits 0 with every handoff committed, and writes JSON, Markdown and an SVG chart', () => {
    const ours = [...result.systems.filter((s) => s.ours), ...result.dataCurve.filter((p) => p.ours), ...result.connectionCurve.filter((p) => p.ours), ...result.wsCurve.filter((p) => p.ours)];
    expect(ours.flatMap((r) => r.notCommitted), output).toEqual([]);
    expect(result.systems.flatMap((s) => s.noLoad?.notCommitted ?? []), output).toEqual([]);
    expect(code, output).toBe(0);
    expect(stderr).not.toContain('did not commit');
    expect(readFileSync(join(out, 'bench.md'), 'utf8')).not.toContain('FAILED:');
    expect(readFileSync(join(out, 'bench.md'), 'utf8')).toContain('| system | handoffs | requests | refused | reset |');
    expect(readFileSync(join(out, 'latency.svg'), 'utf8')).toMatch(/^<svg [^]*<\/svg>\n$/);
  });

  it('ran every installed system with the same number of handoffs, and counted requests', () => {
    const ids = result.systems.map((s) => s.id);
    expect(ids).toEqual(['handoff-hello', 'handoff-stateless-hello', 'naive-hello', 'pm2-cluster-nodrain-hello', 'pm2-cluster-drain-hello', 'pm2-fork-restart-hello', 'nginx-upgrade', 'handoff-kv', 'naive-kv', 'pm2-cluster-drain-kv', 'pm2-fork-restart-kv']);
    for (const s of result.systems) {
      if (s.id === 'nginx-upgrade' && !NGINX) {
        expect(s.skipped, output).toMatch(/nginx is not installed/);
        continue;
      }
      expect(s.skipped, `${s.id}\n${output}`).toBeNull();
      expect(s.failure, `${s.id}\n${output}`).toBeNull();
      expect(s.handoffs.filter((h) => h.ok), s.id).toHaveLength(QUICK.handoffs);
      expect(s.handoffsPlanned, s.id).toBe(QUICK.handoffs);
      expect(s.ours, s.id).toBe(s.id.startsWith('handoff-'));
      if (s.ours) expect(s.noLoad?.handoffs.filter((h) => h.ok), s.id).toHaveLength(QUICK.handoffs);
      else expect(s.noLoad, s.id).toBeNull();
      expect(s.requests, s.id).toBeGreaterThan(0);
      expect(s.throughput.baselineRps, s.id).toBeGreaterThan(0);
      expect(s.timeline?.p99.length, s.id).toBeGreaterThan(0);
    }
    expect(result.machine.peers.pm2).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it("shows this project's rows with 0 errors of any kind and 0 lost writes", () => {
    for (const s of result.systems.filter((r) => r.ours && r.skipped === null)) {
      const none = { refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 };
      expect(s.errors, `${s.id}\n${output}`).toEqual(none);
      expect(s.noLoad?.errors, `${s.id} without load\n${output}`).toEqual(none);
    }
    const kv = result.systems.find((r) => r.id === 'handoff-kv');
    expect(kv?.acknowledgedWrites).toBeGreaterThan(0);
    expect(kv?.lostWrites).toBe(0);
  });

  it('measures the scale curves and the data-path overhead', () => {
    expect(result.connectionCurve.map((p) => [p.system, p.x])).toEqual(QUICK.curveConnections.flatMap((n) => [['handoff-hello', n], ['handoff-hello-nomove', n], ['pm2-cluster-drain-hello', n]]));
    expect(result.wsCurve.map((p) => [p.system, p.x])).toEqual(QUICK.curveWsClients.flatMap((n) => [['handoff-ws', n], ['handoff-ws-nomove', n]]));
    for (const p of result.wsCurve) {
      expect(p.failure, JSON.stringify(p)).toBeNull();
      expect(p.ok, JSON.stringify(p)).toBe(true);
      expect(p.clients?.opened, JSON.stringify(p)).toBe(p.x);
    }
    expect(result.dataCurve.map((p) => [p.system, p.x])).toEqual(QUICK.curveKeys.flatMap((n) => [['handoff-kv-preload', n], ['handoff-kv-nopreload', n], ['naive-kv', n]]));
    for (const p of [...result.connectionCurve, ...result.dataCurve]) {
      expect(p.failure, JSON.stringify(p)).toBeNull();
      expect(p.ok, JSON.stringify(p)).toBe(true);
      expect(p.handoffs, JSON.stringify(p)).toHaveLength(QUICK.curveHandoffs);
    }
    for (const p of [...result.connectionCurve, ...result.dataCurve].filter((q) => q.ours)) expect(p.errors, JSON.stringify(p)).toBe(0);
    expect(result.overhead.map((r) => r.id)).toEqual(['bare', 'handoff', 'pm2-cluster']);
    for (const r of result.overhead) expect(r.medianRps, r.id).toBeGreaterThan(0);
  });

  it('measures the in-process hot reload in both modes: every reload reloaded, 0 failed calls, memory probed', () => {
    const reload = result.reload;
    expect(reload, output).not.toBeNull();
    expect(reload?.calls.map((c) => c.id)).toEqual(['direct', 'inThread-callSync', 'inThread-call', 'worker-call', 'worker-inFlight']);
    for (const c of reload?.calls ?? []) expect(c.calls, c.id).toBeGreaterThan(0);
    expect(reload?.reloads.map((r) => r.mode)).toEqual(['worker', 'inThread']);
    for (const r of reload?.reloads ?? []) {
      expect(r.done, r.mode).toBe(QUICK.reloads);
      expect(r.notReloaded, r.mode).toEqual([]);
      expect(r.calls, r.mode).toBeGreaterThan(0);
      expect(r.callsFailed, `${r.mode}: ${r.firstFailure ?? ''}`).toBe(0);
    }
    expect(reload?.memory.map((m) => [m.mode, m.failure, m.probe?.reloads])).toEqual([
      ['worker', null, QUICK.reloadMemoryReloads],
      ['inThread', null, QUICK.reloadMemoryReloads],
    ]);
    expect(readFileSync(join(out, 'bench.md'), 'utf8')).toContain('## In-process hot reload (`@handoff/reload`)');
  });
});
