/**
 * handoffctl's options and drain lines, against a fake trigger socket that records the
 * request and answers given lines (the built binary, dist/ctl.js; no supervisor runs).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFinished } from 'vitest';

const CTL = fileURLToPath(new URL('../dist/ctl.js', import.meta.url));

/** Runs handoffctl against a fake supervisor answering `answers`; resolves with the request it got and the output. */
async function ctl(args: string[], answers: Record<string, unknown>[]): Promise<{ request: unknown; code: number | null; stdout: string; stderr: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-ctl-'));
  const path = join(dir, 'trigger.sock');
  let request: unknown = null;
  const server = createServer((socket) => {
    socket.once('data', (data) => {
      request = JSON.parse(data.toString());
      socket.end(answers.map((a) => `${JSON.stringify(a)}\n`).join(''));
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  onTestFinished(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const child = spawn(process.execPath, [CTL, '--socket', path, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  return { request, code, stdout, stderr };
}

const committed = { type: 'result', handoffId: 'h-1', committed: true, outcome: 'committed', incumbentPid: 7, timings: { totalMs: 90, phases: { preparing: 50 } }, abortReason: null };
const drain = (counts: number[], leftMs: number): Record<string, unknown> => ({ type: 'drain', handoffId: 'h-1', pending: counts.reduce((a, b) => a + b, 0), kinds: ['job', 'connection'].slice(0, counts.length), counts, oldest: 'job 17: export', oldestMs: 95_000, leftMs });

describe('handoffctl upgrade', () => {
  it('sends --drain-timeout in ms and --no-drain-wait as cutWork', async () => {
    expect((await ctl(['upgrade', '--drain-timeout', '45s', '--no-drain-wait'], [committed])).request).toEqual({ cmd: 'upgrade', drainTimeout: 45_000, cutWork: true });
    expect((await ctl(['upgrade', '--drain-timeout', '1500'], [committed])).request).toEqual({ cmd: 'upgrade', drainTimeout: 1_500 });
    expect((await ctl(['reload', '--no-drain-wait'], [committed])).request).toEqual({ cmd: 'reload', cutWork: true });
    const bad = await ctl(['upgrade', '--drain-timeout', '0'], [committed]);
    expect(bad.code).toBe(1);
    expect(bad.request).toBeNull();
    expect(bad.stderr).toMatch(/--drain-timeout.*expected a duration from 1 ms to 24 h/);
  });

  it('prints a drain line when what it waits for changes, not every report; --json prints them all', async () => {
    const answers = [drain([2, 1], 45_000), drain([2, 1], 44_000), drain([2, 1], 43_000), drain([1], 42_000), committed];
    const { code, stdout } = await ctl(['upgrade'], answers);
    expect(code).toBe(0);
    expect(stdout.split('\n').filter((l) => l.startsWith('draining'))).toEqual([
      'draining: waiting for 2 jobs, 1 connection — oldest job 17: export (95 s) — 45 s left',
      'draining: waiting for 1 job — oldest job 17: export (95 s) — 42 s left',
    ]);
    const json = await ctl(['upgrade', '--json'], answers);
    expect(json.stdout.split('\n').filter((l) => l.includes('"type":"drain"'))).toHaveLength(4);
  });
});

describe('handoffctl status', () => {
  it('shows what a handoff in phase preparing waits for, aged to now; --json as is', async () => {
    const at = Date.now() - 2_000;
    const status = { type: 'status', lifecycle: 'handingOff', pid: 1, supervisorPid: 2, supervisorUptimeMs: 1_000, restarts: 0, incumbent: null, program: { command: '/bin/d', args: [], env: {} }, lastHandoff: null, handoff: { handoffId: 'h-1', phase: 'preparing', drain: { pending: 2, kinds: ['job'], counts: [2], oldest: '', oldestMs: 0, leftMs: 30_000, at } } };
    const { stdout } = await ctl(['status'], [status]);
    expect(stdout).toMatch(/^handoff {6}h-1 in phase preparing — draining: waiting for 2 jobs — 2[78] s left$/m);
    expect(JSON.parse((await ctl(['status', '--json'], [status])).stdout)).toEqual(status);
    const sealing = await ctl(['status'], [{ ...status, handoff: { ...status.handoff, phase: 'sealing' } }]);
    expect(sealing.stdout).toMatch(/^handoff {6}h-1 in phase sealing$/m);
  });
});
