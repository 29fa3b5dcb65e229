/**
 * Reload in place (PROTOCOL.md section 6, "Reload"), end to end as an operator runs it: the
 * real handoff-supervisor binary, handoffctl, and the kv example's `validate` plugin and
 * KV_CONFIG file. No handoff: the daemon's pid never changes, and a write load runs through.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ask } from '@handoff/supervisor-cli/client';
import { LoadDriver, verifyLedger, waitForValue } from '../src/index.js';
import { Workspace, call, showOnFailure } from './bin.js';

/**
 * A validate plugin: version `label`, refusing values that contain `refuse` (none: accepts
 * all). The words refused here are upper case: the load driver's values (lower-case base 36)
 * can never contain them.
 */
function validator(label: string, refuse?: string, extra = ''): string {
  return `export const version = ${JSON.stringify(label)};
${extra}
export function validate(key, value) {
  return ${refuse === undefined ? 'null' : `value.includes(${JSON.stringify(refuse)}) ? ${JSON.stringify(`refused by validate ${label}`)} : null`};
}
`;
}

/**
 * A gate a plugin's load waits at: module code that reads a FIFO (the read blocks until the
 * test writes to it), so that the reload stays in `preparing` exactly until the test has
 * looked, and no longer — an event, not a guessed duration.
 */
function gate(dir: string, name: string): { readonly code: string; readonly open: () => Promise<void> } {
  const path = join(dir, name);
  const made = spawnSync('mkfifo', [path], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`mkfifo ${path}: ${made.stderr || String(made.error)}`);
  return {
    code: `await (await import('node:fs/promises')).readFile(${JSON.stringify(path)});`,
    open: () => writeFile(path, 'go'),
  };
}


describe('handoffctl reload, in place, through the supervisor to the kv daemon', () => {
  it('swaps the validate plugin under a write load without a handoff, reports a broken version while the active one serves on, and reloads the daemon configuration', async () => {
    await using ws = new Workspace();
    const plugin = join(ws.dir, 'validate.js');
    const settings = join(ws.dir, 'kv.json');
    writeFileSync(plugin, validator('1'));
    writeFileSync(settings, '{"maxValueBytes": null}\n');
    const sup = ws.start(['--config', ws.config('', { KV_VALIDATE_PLUGIN: plugin, KV_CONFIG: settings, KV_PLUGIN_PROBATION_MS: '200' })]);
    showOnFailure(sup);
    const status = await sup.ready();
    const pid = (status.incumbent as { pid: number }).pid;
    const port = await sup.port();
    const load = new LoadDriver({ port, readers: 1, writers: 2, probeEveryMs: 20 }).start();
    await load.waitForProgress(50);

    // A new version, swapped in place: its steps stream, the same pid serves, and it is in force at once.
    writeFileSync(plugin, validator('2', 'FORBIDDEN'));
    const reloaded = await ws.ctl(['reload', 'validate']);
    expect(reloaded.code, reloaded.stderr).toBe(0);
    expect(reloaded.stdout).toMatch(/^preparing: /m);
    expect(reloaded.stdout).toMatch(/^swapped: /m);
    expect(reloaded.stdout).toMatch(new RegExp(`reloaded plugin validate: 2 in force in pid ${pid} \\(\\d+ ms, no handoff\\)`));
    expect(await call(port, 'PUT', '/kv/r1', 'something FORBIDDEN')).toEqual({ status: 422, body: 'refused by validate 2\n' });
    expect((await call(port, 'PUT', '/kv/r2', 'fine')).status).toBe(200);

    // A version that throws at load: one clear line, exit 2, and version 2 serves on.
    writeFileSync(plugin, validator('3', undefined, 'throw new Error("no database URL configured");'));
    const broken = await ws.ctl(['reload', 'validate']);
    expect(broken.code).toBe(2);
    expect(broken.stderr).toMatch(/plugin validate was not reloaded: .*no database URL configured.*; 2 serves on/);
    expect(broken.stderr).not.toMatch(/\n\s+at /);
    expect((await call(port, 'PUT', '/kv/r3', 'FORBIDDEN again')).status).toBe(422);

    // Another file, by path; an unknown plugin; a malformed name: each says what is wrong.
    const other = join(ws.dir, 'other.js');
    writeFileSync(other, validator('from-other', 'NOPE'));
    const from = await ws.ctl(['reload', 'validate', '--from', other]);
    expect(from.code, from.stderr).toBe(0);
    expect(from.stdout).toMatch(/reloaded plugin validate: from-other in force/);
    expect((await call(port, 'PUT', '/kv/r4', 'FORBIDDEN is fine now')).status).toBe(200);
    const unknown = await ws.ctl(['reload', 'transform']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/this daemon has no plugin named "transform"; it has "validate"/);
    const malformed = await ws.ctl(['reload', '../etc']);
    expect(malformed.code).toBe(1);
    expect(malformed.stderr).toMatch(/"\.\.\/etc" is not a plugin name/);

    // The daemon's own configuration: applied in place; an invalid file keeps the one in force.
    writeFileSync(settings, '{"maxValueBytes": 1000}\n');
    const config = await ws.ctl(['reload', '--daemon-config']);
    expect(config.code, config.stderr).toBe(0);
    expect(config.stdout).toMatch(/reloaded the daemon's configuration: .*kv\.json \w+ \(maxValueBytes 1000\) in force/);
    expect((await call(port, 'PUT', '/kv/big', 'x'.repeat(1001))).status).toBe(413);
    writeFileSync(settings, '{"maxValueBytes": "lots"}\n');
    const invalid = await ws.ctl(['reload', '--daemon-config']);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toMatch(/the configuration was not reloaded \(the current one stays\): .*"maxValueBytes" must be a whole number/);
    expect((await call(port, 'PUT', '/kv/big', 'x'.repeat(1001))).status).toBe(413);
    writeFileSync(settings, '{"maxValueBytes": null}\n');
    expect((await ws.ctl(['reload', '--daemon-config'])).code).toBe(0);

    // The daemon's metrics count it all; nothing was handed off and no write was lost.
    const metrics = (await call(port, 'GET', '/metrics')).body;
    expect(metrics).toMatch(/handoff_plugin_reloads_total\{plugin="validate"\} 3\b/);
    expect(metrics).toMatch(/handoff_plugin_info\{plugin="validate",version="from-other",state="active",mode="worker"\} 1/);
    expect(metrics).toMatch(/handoff_plugin_reload_failures_total\{plugin="validate"\} 1\b/);
    const report = await load.stop();
    expect(report.errors, report.samples.join('\n')).toEqual({ refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 });
    expect(report.acknowledgedWrites).toBeGreaterThan(50);
    expect(await verifyLedger(port, load.ledger)).toEqual([]);
    const after = await sup.status();
    expect(after.incumbent).toMatchObject({ pid, generation: 1 });
    expect(after.lastHandoff).toBeNull();
  });

  it('is refused during a handoff and refuses one, and the successor of a later handoff loads the plugin file as it is on disk', async () => {
    await using ws = new Workspace();
    const plugin = join(ws.dir, 'validate.js');
    writeFileSync(plugin, validator('1'));
    // The incumbent's seal takes 1.5 s: the handoff is in progress long enough to ask.
    const sup = ws.start(['--config', ws.config('', { KV_VALIDATE_PLUGIN: plugin, KV_SEAL_DELAY_MS: '1500' })]);
    showOnFailure(sup);
    await sup.ready();
    const port = await sup.port();
    writeFileSync(plugin, validator('2', 'FORBIDDEN'));
    let sealing!: () => void;
    const inSeal = new Promise<void>((resolve) => (sealing = resolve));
    const upgrade = ask(ws.trigger, { cmd: 'upgrade' }, (a) => {
      if (a.type === 'phase' && a.phase === 'sealing') sealing();
    });
    await inSeal;
    const refused = await ws.ctl(['reload', 'validate']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/handoff \S+ is in progress; nothing was changed — reload again after it/);
    expect((await upgrade).find((a) => a.type === 'result')).toMatchObject({ committed: true });
    // The new daemon loaded validate.js as it is now (version 2); the daemon configuration has no hook.
    await waitForValue('the new daemon to refuse with version 2', async () => ((await call(port, 'PUT', '/kv/x', 'FORBIDDEN')).status === 422 ? true : undefined), 5_000);
    const config = await ws.ctl(['reload', '--daemon-config']);
    expect(config.code).toBe(2);
    expect(config.stderr).toMatch(/this daemon has no configuration reload hook/);

    // The other way round: while a version is still loading, status shows the reload and no handoff starts.
    const loading = gate(ws.dir, 'v3-loads');
    writeFileSync(plugin, validator('3', 'FORBIDDEN', loading.code));
    let preparing!: () => void;
    const inPrepare = new Promise<void>((resolve) => (preparing = resolve));
    const slow = ask(ws.trigger, { cmd: 'reload', plugin: 'validate' }, (a) => {
      if (a.type === 'reloadStep' && a.phase === 'preparing') preparing();
    });
    await inPrepare;
    expect((await ws.ctl(['status'])).stdout).toMatch(/^reloading +plugin validate in place$/m);
    const blocked = await ws.ctl(['upgrade']);
    expect(blocked.code).toBe(1);
    expect(blocked.stderr).toMatch(/a reload of plugin validate is in progress/);
    await loading.open();
    expect((await slow).find((a) => a.type === 'reloadDone')).toMatchObject({ outcome: 'reloaded', version: '3' });
  });

  it('survives a SIGKILL of the supervisor mid-reload: the daemon finishes it alone and serves on, and the restarted supervisor adopts it and reloads again', async () => {
    await using ws = new Workspace();
    const plugin = join(ws.dir, 'validate.js');
    writeFileSync(plugin, validator('1'));
    const sup = ws.start(['--config', ws.config('', { KV_VALIDATE_PLUGIN: plugin })]);
    showOnFailure(sup);
    const status = await sup.ready();
    const daemon = (status.incumbent as { pid: number }).pid;
    const port = await sup.port();
    // Version 2 finishes loading only when the test says: the supervisor (not the keeper) dies while the daemon prepares it.
    const loading = gate(ws.dir, 'v2-loads');
    writeFileSync(plugin, validator('2', 'FORBIDDEN', loading.code));
    let preparing!: () => void;
    const inPrepare = new Promise<void>((resolve) => (preparing = resolve));
    const lost = ask(ws.trigger, { cmd: 'reload', plugin: 'validate' }, (a) => {
      if (a.type === 'reloadStep' && a.phase === 'preparing') preparing();
    }).catch((error: unknown) => error as Error);
    await inPrepare;
    process.kill(status.supervisorPid as number, 'SIGKILL');
    await lost; // the answer is cut off with its supervisor
    // Only now may version 2 finish loading: the daemon, alone, finishes the reload and serves on.
    await loading.open();
    const refusing = await waitForValue('the daemon to swap in version 2 on its own', async () => {
      const r = await call(port, 'PUT', '/kv/x', 'FORBIDDEN');
      return r.status === 422 ? r.body : undefined;
    }, 10_000);
    expect(refusing).toBe('refused by validate 2\n');
    const adopted = await waitForValue('the keeper\'s new supervisor to adopt the daemon', async () => {
      const [s] = await ask(ws.trigger, { cmd: 'status' }).catch(() => []);
      return s?.type === 'status' && s.lifecycle === 'serving' && s.supervisorPid !== status.supervisorPid ? s : undefined;
    }, 20_000);
    expect(adopted.incumbent).toMatchObject({ pid: daemon, adopted: true });
    // Its probation over (the daemon's metrics say so), version 2 is simply the active one.
    await waitForValue('version 2 to pass its probation', async () => /handoff_plugin_info\{plugin="validate",version="2",state="active"/.test((await call(port, 'GET', '/metrics')).body) || undefined, 10_000);
    writeFileSync(plugin, validator('3'));
    const again = await ws.ctl(['reload', 'validate']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(new RegExp(`reloaded plugin validate: 3 in force in pid ${daemon} `));
    expect((await call(port, 'PUT', '/kv/x', 'FORBIDDEN')).status).toBe(200);
  });
});
