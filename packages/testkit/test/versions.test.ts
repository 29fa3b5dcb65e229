/**
 * The real binaries remembering versions: probation and revert after the commit point, the
 * committed program for every restart (also after the supervisor's own restart), the
 * fallback out of a crash loop, and the configuration reloaded by SIGHUP or handoffctl.
 */
import { readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LoadDriver, verifyLedger, waitUntil } from '../src/index.js';
import { Workspace, freePort, showOnFailure } from './bin.js';

function health(port: number): Promise<{ pid: number; buildId: string }> {
  return new Promise((resolve, reject) => {
    get(`http://127.0.0.1:${port}/health`, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        resolve(JSON.parse(body) as { pid: number; buildId: string });
      });
    }).on('error', reject);
  });
}

type Versions = { program: { args: string[]; env: Record<string, string>; command: string }; good: boolean; lastGood: unknown; probation: unknown; lastProbation: { outcome: string; reason: string } | null; lastRevert: { reason: string } | null };

describe('probation: rollback after the commit point', () => {
  it('reverts under load to the last known good version when the new one starts failing its health check: 0 errors, 0 lost writes, exit 2', async () => {
    await using ws = new Workspace();
    const { file, port } = await ws.configWithPort((p) => `\n[health]\nurl = "http://127.0.0.1:${p}/ready"\ninterval = 100\nfailures = 3\n\n[probation]\nwindow = 20000\n`);
    const sup = ws.start(['--config', file]);
    showOnFailure(sup);
    await sup.ready();
    const load = new LoadDriver({ port, readers: 2, writers: 2, probeEveryMs: 5 }).start();
    await load.waitForProgress(30);
    // v2 serves, then its health check starts failing 1 s after it started.
    const up = await ws.ctl(['upgrade', '--env', 'KV_BUILD_ID=v2', '--env', 'KV_UNHEALTHY_AFTER_MS=1000', '--wait']);
    expect(up.stdout).toMatch(/^committed: /m);
    expect(up.stdout).toMatch(/^probation: pid \d+ is watched for 20 s; if it dies or fails its health check, the supervisor hands back to .*KV_BUILD_ID=v1/m);
    expect(up.stdout).toMatch(/^reverted: the new version failed on probation: the health check failed 3 times in a row: GET http:\/\/127\.0\.0\.1:\d+\/ready answered 503 \(expected below 400\); the last known good version serves again \(pid \d+\)/m);
    expect(up.code, up.stdout + up.stderr).toBe(2);
    await load.waitForProgress(30);
    const report = await load.stop();
    expect(report.errors).toEqual({ refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 });
    expect(await verifyLedger(port, load.ledger)).toEqual([]);
    expect((await health(port)).buildId).toBe('v1');
    const status = await sup.status();
    const v = status.versions as Versions;
    expect(v).toMatchObject({ good: true, probation: null, lastProbation: { outcome: 'reverted' } });
    expect(v.program.env.KV_BUILD_ID).toBe('v1');
    expect(status.incumbent).toMatchObject({ generation: 3 });
    const text = await ws.ctl(['status']);
    expect(text.stdout).toMatch(/^reverted +\d+ s ago to the last known good version: the new version failed on probation/m);
    const metrics = sup.output; // the log says it too
    expect(metrics).toMatch(/"outcome":"reverted"/);
  });

  it('a new version that dies on probation is replaced by the last known good one', async () => {
    await using ws = new Workspace();
    const { file, port } = await ws.configWithPort(() => '\n[probation]\nwindow = 20000\n');
    const sup = ws.start(['--config', file]);
    showOnFailure(sup);
    await sup.ready();
    const up = await ws.ctl(['upgrade', '--env', 'KV_BUILD_ID=v2', '--env', 'KV_DIE_AFTER_MS=500', '--wait']);
    expect(up.stdout).toMatch(/^reverted: the new version died on probation: the daemon \(pid \d+\) died: exit code 4/m);
    expect(up.code).toBe(2);
    await waitUntil('v1 to serve again', async () => (await sup.status()).lifecycle === 'serving' && (await health(port).catch(() => null))?.buildId === 'v1', 15_000, { context: () => sup.output });
    expect(((await sup.status()).versions as Versions).program.env).not.toHaveProperty('KV_DIE_AFTER_MS');
  });
});

describe('upgrade --wait', () => {
  it('exits 2 when the new daemon dies right after the commit point, before its probation could even start', async () => {
    await using ws = new Workspace();
    const crash = join(ws.dir, 'crash-point');
    const { file, port } = await ws.configWithPort(() => '\n[probation]\nwindow = 20000\n');
    const sup = ws.start(['--config', file], { HANDOFF_CRASH_FILE: crash });
    showOnFailure(sup);
    await sup.ready();
    writeFileSync(crash, 'successor:received-Commit SIGKILL\n');
    const up = await ws.ctl(['upgrade', '--env', 'KV_BUILD_ID=v2', '--wait']);
    expect(up.stdout).toMatch(/^committed: .*; no daemon serves yet\nafter the handoff: the new daemon \(pid \d+\) died right after the commit point.*restarts the last known good version/m);
    expect(up.stdout).toMatch(/^reverted: the new version died on probation: /m);
    expect(up.code).toBe(2);
    await waitUntil('v1 to serve again', async () => (await health(port).catch(() => null))?.buildId === 'v1', 15_000, { context: () => sup.output });
  });

  it('exits 1, not 0, when the supervisor goes away during the probation it waits for', async () => {
    await using ws = new Workspace();
    const { file } = await ws.configWithPort(() => '\n[probation]\nwindow = 60000\n');
    const sup = ws.start(['--config', file]);
    showOnFailure(sup);
    await sup.ready();
    const waiting = ws.ctl(['upgrade', '--env', 'KV_BUILD_ID=v2', '--wait']);
    let status = await sup.status();
    // The handoff answered (its result and probation lines are sent as it settles), the new version on probation.
    await waitUntil('the new version on probation', async () => {
      status = await sup.status();
      return (status.versions as Versions).probation !== null && (status.lastHandoff as { committed?: boolean } | null)?.committed === true;
    }, 15_000, { context: () => sup.output });
    process.kill(Number(status.supervisorPid), 'SIGKILL');
    const up = await waiting;
    expect(up.code).toBe(1);
    expect(up.stderr).toMatch(/^handoffctl: the supervisor closed the connection during the probation of pid \d+: its outcome is unknown here \(a restarted supervisor goes on watching it\); see "handoffctl status"$/m);
  });
});

describe('versions: what restarts run', () => {
  it('a crash restart after "upgrade --command" runs the committed program, also after the supervisor itself was replaced', async () => {
    await using ws = new Workspace();
    const { file, port } = await ws.configWithPort(() => '\n[probation]\nwindow = 0\n');
    const node2 = join(ws.dir, 'node-v2');
    symlinkSync(process.execPath, node2);
    const sup = ws.start(['--config', file]);
    showOnFailure(sup);
    await sup.ready();
    const up = await ws.ctl(['upgrade', '--command', node2, '--env', 'KV_BUILD_ID=v2']);
    expect(up.code, up.stderr).toBe(0);
    const replaced = await ws.ctl(['restart-supervisor']);
    expect(replaced.code, replaced.stderr).toBe(0);
    const before = await health(port);
    process.kill(before.pid, 'SIGKILL');
    let status = await sup.status();
    await waitUntil('a restarted daemon to serve', async () => {
      status = await sup.status();
      const inc = status.incumbent as { pid: number; session: boolean } | null;
      return status.lifecycle === 'serving' && inc !== null && inc.pid !== before.pid && inc.session;
    }, 15_000, { context: () => sup.output });
    const after = await health(port);
    expect(after.buildId).toBe('v2');
    expect(readFileSync(`/proc/${after.pid}/cmdline`, 'utf8').split('\0')[0]).toBe(node2);
    expect(status).toMatchObject({ program: { command: node2 }, incumbent: { generation: 3 }, lastHandoff: { committed: true } });
  });

  it('a crash loop of the new version falls back to the last known good one (with none left it gives up: see cli.test.ts)', async () => {
    await using ws = new Workspace();
    const { file, port } = await ws.configWithPort(() => '\n[probation]\nwindow = 0\n\n[restart]\ninitial_delay = 50\nmax_failures = 2\n');
    const sup = ws.start(['--config', file]);
    showOnFailure(sup);
    await sup.ready();
    const up = await ws.ctl(['upgrade', '--env', 'KV_BUILD_ID=v2', '--env', 'KV_DIE_AFTER_MS=300']);
    expect(up.code, up.stderr).toBe(0);
    let status = await sup.status();
    await waitUntil('the fallback to the last known good version', async () => {
      status = await sup.status();
      return (status.versions as Versions).lastRevert !== null && status.lifecycle === 'serving';
    }, 20_000, { context: () => sup.output });
    expect((status.versions as Versions).lastRevert?.reason).toMatch(/3 failures within 60000 ms is a crash loop \(limit 2\): falling back to the last known good version/);
    await waitUntil('v1 to answer', async () => (await health(port).catch(() => null))?.buildId === 'v1', 10_000);
    expect((status.versions as Versions).program.env).not.toHaveProperty('KV_DIE_AFTER_MS');
    expect(sup.output).toMatch(/"msg":"revert"/);
  });
});

describe('configuration reload', () => {
  it('SIGHUP and "handoffctl reload" re-read handoff.toml: an invalid file changes nothing and says why; a valid one hands off to its daemon settings and names what needs a restart', async () => {
    await using ws = new Workspace();
    const { file, port } = await ws.configWithPort(() => '\n[probation]\nwindow = 0\n');
    const sup = ws.start(['--config', file]);
    showOnFailure(sup);
    const before = await sup.ready();
    const good = readFileSync(file, 'utf8');
    // Broken: SIGHUP changes nothing; reload answers the located error.
    writeFileSync(file, `${good}\n[daemon]\nbogus = 1\n`);
    process.kill(Number(before.pid), 'SIGHUP');
    await waitUntil('the refusal in the log', () => sup.output.includes('reload refused'), 10_000, { context: () => sup.output });
    const refused = await ws.ctl(['reload']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^handoffctl: HANDOFF_BAD_REQUEST: .*handoff\.toml:\d+:\d+: not valid TOML.*; nothing was changed$/m);
    expect(refused.stderr).not.toMatch(/\n\s+at /);
    // A file that is TOML but not a valid configuration: handoffctl still reaches the
    // supervisor through it, with a warning; reload refuses it.
    writeFileSync(file, `${good}\n[bogus]\nx = 1\n`);
    const viaFile = await ws.ctlWithConfig(['status']);
    expect(viaFile.code, viaFile.stderr).toBe(0);
    expect(viaFile.stderr).toMatch(/^handoffctl: warning: .*handoff\.toml:\d+: top level bogus: unknown key/m);
    expect(viaFile.stdout).toMatch(/^daemon +pid \d+/m);
    expect((await ws.ctlWithConfig(['reload'])).stderr).toMatch(/^handoffctl: HANDOFF_BAD_REQUEST: .*bogus: unknown key.*; nothing was changed$/m);
    const unchanged = await sup.status();
    expect(unchanged.incumbent).toMatchObject({ pid: (before.incumbent as { pid: number }).pid });
    // Valid, with new daemon settings and a new listener address (that one needs a restart).
    writeFileSync(file, good.replace('KV_BUILD_ID = "v1"', 'KV_BUILD_ID = "v7"').replace(`127.0.0.1:${port}`, `127.0.0.1:${await freePort()}`));
    const reloaded = await ws.ctl(['reload']);
    expect(reloaded.code, reloaded.stderr).toBe(0);
    expect(reloaded.stdout).toMatch(/^reloaded .*handoff\.toml: handing off to .*KV_BUILD_ID=v7.*; needs a restart of handoff-supervisor to apply: \[\[listeners\]\]$/m);
    expect(reloaded.stdout).toMatch(/^committed: /m);
    expect((await health(port)).buildId).toBe('v7');
    // SIGHUP with a valid file does the same.
    writeFileSync(file, good.replace('KV_BUILD_ID = "v1"', 'KV_BUILD_ID = "v8"'));
    process.kill(Number(before.pid), 'SIGHUP');
    await waitUntil('the SIGHUP reload to hand off', async () => (await health(port).catch(() => null))?.buildId === 'v8', 15_000, { context: () => sup.output });
  });

  it('"upgrade --arg" without --command runs the configured command with the new args, and the pre-handoff check is told exactly that program', async () => {
    await using ws = new Workspace();
    const seen = join(ws.dir, 'seen.json');
    const { file } = await ws.configWithPort(() => `\n[hooks]\npre_handoff = 'printf %s "$HANDOFF_NEW_PROGRAM" > seen.json'\n`);
    const sup = ws.start(['--config', file]);
    showOnFailure(sup);
    const before = await sup.ready();
    const kvMain = (before.program as { args: string[] }).args[0] ?? '';
    const up = await ws.ctl(['upgrade', '--arg', kvMain, '--arg=--extra-flag']);
    expect(up.code, up.stderr).toBe(0);
    const status = await sup.status();
    expect(status.program).toMatchObject({ command: process.execPath, args: [kvMain, '--extra-flag'] });
    const told = JSON.parse(readFileSync(seen, 'utf8')) as unknown;
    expect(told).toEqual(status.program);
    const pid = (status.incumbent as { pid: number }).pid;
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(1, 3)).toEqual([kvMain, '--extra-flag']);
  });
});

describe("the operator's view of a failure", () => {
  it("shows a failed new daemon's last lines of output with the rollback, and a first daemon's with the start-up failure", async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config()]);
    showOnFailure(sup);
    await sup.ready();
    const up = await ws.ctl(['upgrade', '--env', 'KV_FAIL_START=1']);
    expect(up.code).toBe(2);
    expect(up.stdout).toMatch(/^rolled back: handoff \S+ — HANDOFF_SUCCESSOR_EXITED: the successor exited during phase \w+: exit code 3; the previous version serves on \(pid \d+\)\nthe new daemon's last output:\n {2}\| handoff-kv: KV_FAIL_START=1, exiting$/m);
    expect(readdirSync(ws.runtimeDir).filter((f) => f.startsWith('.failure'))).toEqual([]);
    await ws.ctl(['stop']);
    await sup.exited;

    await using ws2 = new Workspace();
    const failing = ws2.start(['--config', ws2.config('', { KV_FAIL_START: '1' })]);
    showOnFailure(failing);
    expect(await failing.exited).toBe(1);
    expect(failing.output).toMatch(/exit code 3 — its last words: handoff-kv: KV_FAIL_START=1, exiting; it never served since the supervisor started/);
    expect(failing.output).not.toMatch(/\n\s+at /);
  });
});
