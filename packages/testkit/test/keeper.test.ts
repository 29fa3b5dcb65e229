/**
 * The binary as operators run it, standalone: its keeper holds the listeners, so that the
 * supervisor can die, be restarted, be replaced in place, or lose its keeper too, while the
 * daemon serves on and is adopted — with no refused connection and no lost write.
 */
import { chmodSync, chownSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, onTestFailed } from 'vitest';
import { ask } from '@handoff/supervisor-cli/client';
import type { Answer } from '@handoff/supervisor-cli/client';
import { LoadDriver, verifyLedger, waitForValue, waitUntil } from '../src/index.js';
import type { LoadReport } from '../src/index.js';
import { Workspace } from './bin.js';
import type { Running } from './bin.js';

const NO_ERRORS = { refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 };

function showOnFailure(ws: Workspace, ...running: Running[]): void {
  onTestFailed(() => {
    for (const r of running) console.error(`--- handoff-supervisor ${String(r.child.pid)} output ---\n${r.output}`);
    const log = join(ws.runtimeDir, 'supervisor.log');
    if (existsSync(log)) console.error(`--- ${log} ---\n${readFileSync(log, 'utf8')}`);
  });
}

/** The serving status, once a supervisor answers with `accept(status)` true. */
function servingStatus(ws: Workspace, accept: (s: Answer) => boolean = () => true, timeoutMs = 20_000): Promise<Answer> {
  return waitForValue(
    'a supervisor serving',
    async () => {
      const [s] = await ask(ws.trigger, { cmd: 'status' }).catch(() => []);
      return s?.type === 'status' && s.lifecycle === 'serving' && s.incumbent !== null && accept(s) ? s : null;
    },
    timeoutMs,
  );
}

const daemonOf = (s: Answer): number => (s.incumbent as { pid: number }).pid;

async function startServing(ws: Workspace, extra = ''): Promise<{ sup: Running; status: Answer; port: number }> {
  const sup = ws.start(['--config', await ws.configOnFreePort(extra)]);
  showOnFailure(ws, sup);
  const status = await sup.ready();
  return { sup, status, port: await sup.port() };
}

async function expectClean(load: LoadDriver, port: number): Promise<LoadReport> {
  const report = await load.stop();
  expect(report.errors, report.samples.join('\n')).toEqual(NO_ERRORS);
  expect(await verifyLedger(port, load.ledger)).toEqual([]);
  expect(report.acknowledgedWrites).toBeGreaterThan(0);
  return report;
}

describe('the keeper', () => {
  it('is the process operators see: it holds the listeners and runs the supervisor as its child', async () => {
    await using ws = new Workspace();
    const { sup, status } = await startServing(ws);
    expect(status.pid).toBe(sup.child.pid);
    expect(status.supervisorPid).not.toBe(sup.child.pid);
    expect(readFileSync(join(ws.runtimeDir, 'supervisor.pid'), 'utf8').trim()).toBe(String(sup.child.pid));
    expect(ws.supervisors().sort()).toEqual([sup.child.pid, status.supervisorPid].sort());
  });

  it('restarts a SIGKILLed supervisor, which adopts the same daemon within 2 s: 0 refused, and the next upgrade commits', async () => {
    await using ws = new Workspace();
    const { status, port } = await startServing(ws);
    const load = new LoadDriver({ port, readers: 4, writers: 1, probeEveryMs: 5 }).start();
    await load.waitForProgress(50);
    process.kill(status.supervisorPid as number, 'SIGKILL');
    const killedAt = Date.now();
    const after = await servingStatus(ws, (s) => s.supervisorPid !== status.supervisorPid);
    const adoptedMs = Date.now() - killedAt;
    expect(daemonOf(after)).toBe(daemonOf(status));
    expect(adoptedMs).toBeLessThan(2_000);
    await load.waitForProgress(50);
    const upgrade = await ws.ctl(['upgrade']);
    expect(upgrade.code, upgrade.stdout + upgrade.stderr).toBe(0);
    await expectClean(load, port);
    expect(ws.daemons()).toHaveLength(1);
  });

  it('replaces the supervisor in place under load (handoffctl restart-supervisor): 0 refused, 0 reset, 0 lost, daemon pid unchanged', async () => {
    await using ws = new Workspace();
    const { status, port } = await startServing(ws);
    const load = new LoadDriver({ port, readers: 4, writers: 2, probeEveryMs: 5 }).start();
    await load.waitForProgress(50);
    const restart = await ws.ctl(['restart-supervisor']);
    expect(restart.code, restart.stdout + restart.stderr).toBe(0);
    expect(restart.stdout).toMatch(new RegExp(`supervisor replaced: pid ${String(status.supervisorPid)} → \\d+ in \\d+ ms; the daemon \\(pid ${daemonOf(status)}\\) served throughout`));
    const after = await servingStatus(ws);
    expect(after.supervisorPid).not.toBe(status.supervisorPid);
    expect(after.pid).toBe(status.pid);
    expect(daemonOf(after)).toBe(daemonOf(status));
    await load.waitForProgress(50);
    await expectClean(load, port);
    const upgrade = await ws.ctl(['upgrade']);
    expect(upgrade.code, upgrade.stdout + upgrade.stderr).toBe(0);
  });

  it.each([
    ['the keeper is SIGKILLed (its supervisor then exits)', false],
    ['keeper and supervisor are both SIGKILLed', true],
  ])('when %s, starting the binary again adopts the daemon through it: 0 refused', async (_what, both) => {
    await using ws = new Workspace();
    const { sup, status, port } = await startServing(ws);
    const load = new LoadDriver({ port, readers: 4, writers: 1, probeEveryMs: 5 }).start();
    await load.waitForProgress(50);
    process.kill(sup.child.pid ?? 0, 'SIGKILL');
    if (both) process.kill(status.supervisorPid as number, 'SIGKILL');
    await waitUntil('keeper and supervisor gone', () => ws.supervisors().length === 0);
    await load.waitForProgress(50); // the daemon serves alone
    const again = ws.start(['--config', join(ws.dir, 'handoff.toml')]);
    showOnFailure(ws, sup, again);
    expect(await again.exited).toBe(0);
    expect(again.output).toMatch(new RegExp(`the daemon \\(pid ${daemonOf(status)}\\) was serving without a supervisor; it passed the listeners to a new supervisor, running in the background as pid \\d+`));
    const after = await servingStatus(ws);
    expect(daemonOf(after)).toBe(daemonOf(status));
    await load.waitForProgress(50);
    const upgrade = await ws.ctl(['upgrade']);
    expect(upgrade.code, upgrade.stdout + upgrade.stderr).toBe(0);
    await expectClean(load, port);
    // The adopted keeper runs on in the background and stops cleanly.
    const stop = await ws.ctl(['stop']);
    expect(stop.code).toBe(0);
    await waitUntil('everything stopped', () => ws.processes().length === 0 && ws.daemons().length === 0);
    expect(existsSync(join(ws.runtimeDir, 'supervisor.pid'))).toBe(false);
  });

  it('a stop signal that reaches keeper and supervisor both (pkill) is one graceful stop, not a forced one', async () => {
    await using ws = new Workspace();
    const { sup, status } = await startServing(ws);
    process.kill(status.supervisorPid as number, 'SIGTERM');
    process.kill(sup.child.pid ?? 0, 'SIGTERM');
    expect(await sup.exited).toBe(0);
    expect(sup.output).not.toMatch(/forcing/);
    expect(sup.output).toMatch(/"reason":"stopped: drained and sealed"/);
    expect(ws.processes()).toEqual([]);
  });

  it('a stop while the supervisor cannot start (a broken configuration after restart-supervisor) stops the daemon directly', async () => {
    await using ws = new Workspace();
    const { sup, status } = await startServing(ws);
    const file = join(ws.dir, 'handoff.toml');
    writeFileSync(file, `${readFileSync(file, 'utf8')}\nbroken = [\n`);
    const [answer] = await ask(ws.trigger, { cmd: 'restart-supervisor' });
    expect(answer?.type).toBe('restarting');
    await waitUntil('the broken restarts', () => /not valid TOML/.test(sup.output)); // the new supervisor exits 2, again and again
    expect(ws.daemons()).toEqual([daemonOf(status)]); // still serving meanwhile
    process.kill(sup.child.pid ?? 0, 'SIGTERM');
    await sup.exited;
    expect(sup.output).toMatch(/stopping the daemon directly/);
    expect(ws.processes()).toEqual([]);
    expect(ws.daemons()).toEqual([]);
    expect(existsSync(join(ws.runtimeDir, 'supervisor.pid'))).toBe(false);
  });

  it('listens from the first instant: connections made before the first daemon listens queue, none is refused', async () => {
    await using ws = new Workspace();
    const marker = join(ws.dir, 'pre-start-ran');
    // The pre_start hook runs after the listeners are bound and before the daemon starts.
    const file = await ws.configOnFreePort(`\n[hooks]\npre_start = "touch ${marker}; sleep 1"\n`);
    const sup = ws.start(['--config', file]);
    showOnFailure(ws, sup);
    await waitUntil('the pre_start hook', () => existsSync(marker));
    const port = Number(/127\.0\.0\.1:(\d+)/.exec(readFileSync(file, 'utf8'))?.[1]);
    const load = new LoadDriver({ port, readers: 2, writers: 0, probeEveryMs: 5 }).start();
    await sup.ready();
    await load.waitForProgress(50);
    const report = await load.stop();
    expect(report.errors, report.samples.join('\n')).toEqual(NO_ERRORS);
    expect(report.probes).toBeGreaterThan(0);
  });
});

describe('the runtime directory', () => {
  const cases: [string, (dir: string) => void, RegExp][] = [
    ['writable by its group', (dir) => { chmodSync(dir, 0o770); }, /is writable by its group \(mode 770\): they could replace the trigger socket; run "chmod 700 .*run"/],
    ['writable by others', (dir) => { chmodSync(dir, 0o703); }, /is writable by others \(mode 703\).*run "chmod 700/],
    ['not a directory', (dir) => { writeFileSync(dir, ''); }, /is not a directory; choose another \[sockets\] runtime_dir/],
  ];
  if (process.getuid?.() === 0) {
    cases.push(['owned by another user', (dir) => { chownSync(dir, 65_534, 65_534); }, /is owned by uid 65534, not by this user \(uid 0\): its owner could replace the trigger socket; use a directory of your own, or "chown 0 /]);
  }
  for (const [what, spoil, message] of cases) {
    it(`is refused when ${what}, with how to fix it, and nothing is started`, async () => {
      await using ws = new Workspace();
      const file = ws.config();
      if (what === 'not a directory') rmSync(ws.runtimeDir, { recursive: true });
      spoil(ws.runtimeDir);
      const sup = ws.start(['--config', file]);
      showOnFailure(ws, sup);
      expect(await sup.exited).toBe(2);
      expect(sup.output).toMatch(message);
      expect(sup.output.trim().split('\n')).toHaveLength(1);
      expect(ws.daemons()).toEqual([]);
    });
  }

  it('is created with mode 0700 when missing', async () => {
    await using ws = new Workspace();
    const file = readFileSync(ws.config(), 'utf8').replace('runtime_dir = "run"', 'runtime_dir = "run/nested"');
    writeFileSync(join(ws.dir, 'handoff.toml'), file);
    const sup = ws.start(['--config', join(ws.dir, 'handoff.toml')]);
    showOnFailure(ws, sup);
    await waitUntil('the nested runtime dir', () => existsSync(join(ws.runtimeDir, 'nested', 'trigger.sock')));
    expect(statSync(join(ws.runtimeDir, 'nested')).mode & 0o777).toBe(0o700);
  });
});
