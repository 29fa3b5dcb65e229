/**
 * The conformance kit against the reference daemons (every check passes), against a daemon
 * that breaks the protocol on purpose (the relevant checks fail, saying why, and the binary
 * exits 1), and with bad input (one line, exit 2, nothing left behind).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFailed, onTestFinished } from 'vitest';
import { formatReport, runConformance } from '../src/index.js';
import type { ConformanceReport, KnobName } from '../src/index.js';
import { KV_MAIN } from './kv.js';

const CLI = fileURLToPath(new URL('../dist/conformance/cli.js', import.meta.url));
const NO_LOCK_DAEMON = fileURLToPath(new URL('fixtures/no-lock-daemon.js', import.meta.url));
const KV_PYTHON = fileURLToPath(new URL('../../../apps/kv-python/handoff_kv.py', import.meta.url));
/** The fault knobs both reference daemons have. */
const KV_KNOBS: Partial<Record<KnobName, Record<string, string>>> = { 'seal-fail': { KV_SEAL_FAIL: '1' }, stale: { KV_STALE: '1' }, 'slow-ready': { KV_OPEN_DELAY_MS: '8000' } };

/** The kit's temp directories now (to see that a run leaves none). */
function runDirs(): Set<string> {
  return new Set(readdirSync(tmpdir()).filter((d) => d.startsWith('handoff-conformance-')));
}

function showReport(report: () => ConformanceReport | null): void {
  onTestFailed(() => {
    const r = report();
    console.error(r ? formatReport(r, { detailWidth: 2_000 }) : '(no report)');
  });
}

/** Runs the built binary to its exit (killed after `timeoutMs`). */
function runCli(args: readonly string[], timeoutMs = 120_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    const kill = (): void => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // gone
      }
    };
    onTestFinished(kill);
    onTestFailed(() => {
      console.error(`--- handoff-conformance ${args.join(' ')} ---\n${stdout}\n${stderr}`);
    });
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(kill, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('the conformance kit against the reference daemons', () => {
  it('the Node kv daemon passes every check (cancel is skipped: the binary has no cancel request)', async () => {
    const before = runDirs();
    let report: ConformanceReport | null = null;
    showReport(() => report);
    report = await runConformance({ command: process.execPath, args: [KV_MAIN], reference: 'kv', knobs: KV_KNOBS });
    console.log(formatReport(report));
    expect(report.checks.filter((c) => c.status === 'failed').map((c) => `${c.id}: ${c.detail}`)).toEqual([]);
    expect(report.checks.filter((c) => c.status === 'skipped').map((c) => c.id)).toEqual(['abort-cancel']);
    expect(report.passed).toBeGreaterThanOrEqual(29);
    expect(report.ms).toBeLessThan(150_000);
    expect([...runDirs()].filter((d) => !before.has(d))).toEqual([]);
  }, 200_000);

  const hasPython = existsSync(KV_PYTHON);
  it.skipIf(!hasPython)('the Python kv daemon (apps/kv-python) passes every check, the handoffs to and from the Node daemon included', async () => {
    let report: ConformanceReport | null = null;
    showReport(() => report);
    report = await runConformance({ command: 'python3', args: [KV_PYTHON], reference: 'kv', knobs: KV_KNOBS });
    console.log(formatReport(report));
    expect(report.checks.filter((c) => c.status === 'failed').map((c) => `${c.id}: ${c.detail}`)).toEqual([]);
    expect(report.checks.find((c) => c.id === 'reference-from')?.status).toBe('passed');
  }, 200_000);
});

describe('a daemon that breaks the protocol', () => {
  it('one that never takes the lock fails the lock and cold-start checks with the reason, and the binary exits 1 with the table and the JSON', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'conformance-test-'));
    onTestFinished(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    const json = join(dir, 'report.json');
    const r = await runCli(['--only', 'hello,lock-kind,handoff-self', '--json', json, '--', process.execPath, NO_LOCK_DAEMON]);
    expect(r.code).toBe(1);
    const report = JSON.parse(readFileSync(json, 'utf8')) as ConformanceReport;
    const by = Object.fromEntries(report.checks.map((c) => [c.id, c]));
    expect(by.hello).toMatchObject({ status: 'passed', section: '§2 §5 §6' });
    expect(by['lock-kind']).toMatchObject({ status: 'failed', ok: false, section: '§14', detail: expect.stringMatching(/nobody holds a kernel lock on \S+\/\.handoff\.lock while the daemon serves/) });
    expect(by['cold-start']).toMatchObject({ status: 'failed', detail: expect.stringMatching(/^handoff-supervisor: .*does not hold the lock/) });
    expect(by['handoff-self']).toMatchObject({ status: 'failed', detail: expect.stringMatching(/^not run: the supervisor could not cold-start the daemon/) });
    expect(report).toMatchObject({ passed: 2, failed: 3, skipped: 0, ok: false });
    expect(r.stdout).toMatch(/^check\s+section\s+result\s+ms\s+detail$/m);
    expect(r.stdout).toMatch(/^lock-kind\s+§14\s+FAIL\s+\d+\s+nobody holds a kernel lock/m);
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe('conformance: 2 passed, 3 failed, 0 skipped');
  }, 120_000);
});

describe('bad input: one line, exit 2, nothing left behind', () => {
  const cases: [string, string[], RegExp][] = [
    ['no command', [], /^handoff-conformance: no daemon command given; usage: /],
    ['a command that does not exist', ['--', '/nonexistent/daemon'], /^handoff-conformance: the daemon's command \/nonexistent\/daemon does not exist or is not executable/],
    ['a daemon that exits before it serves', ['--', 'false'], /^handoff-conformance: the daemon exited \(1\) before it served \/health/],
    ['an unknown check id', ['--only', 'nope', '--', 'false'], /^handoff-conformance: unknown check id\(s\) nope; the checks are: spawn-contract, /],
  ];
  for (const [what, args, line] of cases) {
    it(what, async () => {
      const before = runDirs();
      const r = await runCli(args, 30_000);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      const lines = r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('handoff-conformance: checking '));
      expect(lines).toEqual([expect.stringMatching(line)]);
      expect([...runDirs()].filter((d) => !before.has(d))).toEqual([]);
    }, 60_000);
  }
});
