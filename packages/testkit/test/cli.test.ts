/**
 * The real binaries: handoff-supervisor and handoffctl, with the kv daemon.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ask } from '@handoff/supervisor-cli/client';
import { LoadDriver, verifyLedger, waitForValue, waitUntil } from '../src/index.js';
import { CTL, MAIN, Workspace, showOnFailure } from './bin.js';

/** Sends raw bytes to the trigger socket; resolves with the whole answer. */
function raw(socket: string, data: string | Buffer): Promise<string> {
  return new Promise((resolve) => {
    const s = createConnection(socket, () => {
      s.write(data);
    });
    let out = '';
    s.setEncoding('utf8').on('data', (d: string) => (out += d));
    s.on('close', () => {
      resolve(out);
    });
    s.on('error', () => {
      resolve(out);
    });
  });
}

function scrape(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        resolve(body);
      });
    }).on('error', reject);
  });
}

describe('handoff-supervisor configuration', () => {
  it('exits 2 naming the file, line and key of a bad configuration', async () => {
    await using ws = new Workspace();
    const file = ws.config('seal = "30s"\n'); // appended to the [timeouts] table
    const sup = ws.start(['--config', file]);
    expect(await sup.exited).toBe(2);
    expect(sup.output).toMatch(/handoff\.toml:\d+: \[timeouts\] seal: expected an integer number of milliseconds/);
    const missing = ws.start(['--config', join(ws.dir, 'nope.toml')]);
    expect(await missing.exited).toBe(2);
    expect(missing.output).toMatch(/nope\.toml: cannot read the configuration \(ENOENT\); check the path given to --config/);
  });
});

describe('a data directory that is not there', () => {
  it('exits 1 with one line naming it and what to do, no stack trace, nothing started', async () => {
    await using ws = new Workspace();
    const file = ws.config();
    rmSync(ws.dataDir, { recursive: true });
    const sup = ws.start(['--config', file]);
    expect(await sup.exited).toBe(1);
    expect(sup.output).toMatch(/handoff-supervisor: recovery failed: cannot open the lock file in .*data: .*ENOENT.*; check that the data directory exists and is writable/);
    expect(sup.output).not.toMatch(/\n\s+at /);
    expect(ws.daemons()).toEqual([]);
  });
});

describe('single instance', () => {
  it('refuses a second supervisor on the same pid file, loudly, while the first serves on', async () => {
    await using ws = new Workspace();
    const file = ws.config();
    const first = ws.start(['--config', file]);
    showOnFailure(first);
    await first.ready();
    const second = ws.start(['--config', file]);
    expect(await second.exited).toBe(3);
    expect(second.output).toMatch(new RegExp(`another handoff supervisor is running \\(pid ${String(first.child.pid)}.*--force to take over`));
    const detached = ws.start(['--config', file, '--daemon']);
    expect(await detached.exited).toBe(3);
    expect(detached.output).toMatch(/another handoff supervisor is running/);
    expect((await first.status()).lifecycle).toBe('serving');
    expect(ws.daemons()).toHaveLength(1);
  });

  it('reclaims a stale pid file', async () => {
    await using ws = new Workspace();
    const file = ws.config();
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((resolve) => dead.once('exit', resolve));
    writeFileSync(join(ws.runtimeDir, 'supervisor.pid'), `${String(dead.pid)}\n`);
    const sup = ws.start(['--config', file]);
    showOnFailure(sup);
    await sup.ready();
    expect(readFileSync(join(ws.runtimeDir, 'supervisor.pid'), 'utf8').trim()).toBe(String(sup.child.pid));
  });

  it('--force takes over a live instance without stopping its daemon or losing a write', async () => {
    await using ws = new Workspace();
    const file = await ws.configOnFreePort();
    const first = ws.start(['--config', file]);
    showOnFailure(first);
    await first.ready();
    const daemon = (await first.status()).incumbent as { pid: number };
    const port = await first.port();
    const load = new LoadDriver({ port, readers: 2, writers: 1, probeEveryMs: 5 }).start();
    await load.waitForProgress(20);
    const second = ws.start(['--config', file, '--force']);
    showOnFailure(first, second);
    expect(await first.exited).toBe(0);
    // This process hands the daemon to a new keeper (the daemon's child) and reports.
    expect(await second.exited).toBe(0);
    expect(second.output).toMatch(new RegExp(`took over from pid ${String(first.child.pid)}: the daemon \\(pid ${daemon.pid}\\) served throughout`));
    const status = await waitForValue('the new instance to serve', async () => {
      const [s] = await ask(ws.trigger, { cmd: 'status' }).catch(() => []);
      return s?.type === 'status' && s.lifecycle === 'serving' ? s : null;
    });
    expect((status.incumbent as { pid: number }).pid).toBe(daemon.pid);
    const report = await load.stop();
    expect(report.errors, report.samples.join('\n')).toEqual({ refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 });
    expect(await verifyLedger(port, load.ledger)).toEqual([]);
    expect(report.acknowledgedWrites).toBeGreaterThan(0);
    expect(ws.daemons()).toEqual([daemon.pid]);
    expect(ws.supervisors()).toHaveLength(2); // the new keeper and its supervisor
  });

  it('--force against an instance that does not answer: stops its whole tree, cold-starts, and says what the outage was', async () => {
    await using ws = new Workspace();
    const file = ws.config();
    const first = ws.start(['--config', file]);
    showOnFailure(first);
    await first.ready();
    const old = [...ws.supervisors(), ...ws.daemons()];
    for (const pid of ws.supervisors()) process.kill(pid, 'SIGSTOP');
    const second = ws.start(['--config', file, '--force']);
    showOnFailure(first, second);
    await second.ready();
    expect(second.output).toMatch(/--force: the previous instance \(pid \d+\) was stopped because it did not answer on its trigger socket/);
    await waitUntil('the outage report', () => /the outage lasted \d+ ms/.test(second.output));
    for (const pid of old) expect(ws.processes()).not.toContain(pid);
    expect(ws.daemons()).toHaveLength(1);
  });
});

describe('signals', () => {
  it('SIGHUP hands off to the configured command', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config()]);
    showOnFailure(sup);
    const before = await sup.ready();
    sup.child.kill('SIGHUP');
    let status = before;
    await waitUntil('the SIGHUP handoff to commit', async () => {
      status = await sup.status();
      return (status.lastHandoff as { committed?: boolean } | null)?.committed === true;
    }, 20_000, { context: () => sup.output });
    expect(status.lastHandoff).toMatchObject({ committed: true });
    expect((status.incumbent as { pid: number }).pid).not.toBe((before.incumbent as { pid: number }).pid);
  });

  it('a second SIGTERM forces: the daemon is killed and the supervisor exits 1', async () => {
    await using ws = new Workspace();
    // A 30 s seal: the graceful stop would take that long.
    const sup = ws.start(['--config', ws.config('', { KV_SEAL_DELAY_MS: '30000' })]);
    showOnFailure(sup);
    await sup.ready();
    sup.child.kill('SIGTERM');
    await waitUntil('the graceful stop to begin', () => sup.output.includes('stopping: the daemon drains and seals'), 10_000, { context: () => sup.output });
    sup.child.kill('SIGTERM');
    expect(await sup.exited).toBe(1);
    expect(sup.output).toMatch(/second stop request: forcing/);
    await waitUntil('the daemon to be killed', () => ws.daemons().length === 0, 5_000);
  });

  it('SIGTERM stops gracefully under write load: exit 0, no acknowledged write lost, no daemon left', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config()]);
    showOnFailure(sup);
    await sup.ready();
    const load = new LoadDriver({ port: await sup.port(), readers: 2, writers: 2, probeEveryMs: 0 }).start();
    await load.waitForProgress(50);
    sup.child.kill('SIGTERM');
    expect(await sup.exited).toBe(0);
    const report = await load.stop();
    expect(report.acknowledgedWrites).toBeGreaterThan(0);
    const log = readFileSync(join(ws.dataDir, 'kv.log'), 'utf8');
    const durable = new Map(log.trim().split('\n').map((l) => { const r = JSON.parse(l) as { k: string; v: string }; return [r.k, r.v] as const; }));
    for (const [key, value] of load.ledger) expect(durable.get(key), key).toBe(value);
    expect(ws.daemons()).toEqual([]);
    expect(sup.output).toMatch(/"msg":"stopped"/);
  });
});

describe('stopping during start-up', () => {
  it('SIGTERM while the first daemon starts: it is stopped, the supervisor exits 0, nothing is left', async () => {
    await using ws = new Workspace();
    // The daemon holds the lock 2 s before it answers: the stop arrives while it starts.
    const sup = ws.start(['--config', ws.config('', { KV_OPEN_DELAY_MS: '2000' })]);
    showOnFailure(sup);
    await waitUntil('the daemon to be spawned', () => ws.daemons().length === 1, 10_000, { context: () => sup.output });
    sup.child.kill('SIGTERM');
    expect(await sup.exited).toBe(0);
    expect(ws.daemons()).toEqual([]);
    expect(sup.output).toMatch(/"msg":"stopped"/);
  });
});

describe('after the commit point, standalone', () => {
  it('without probation, restarts the committed program when the new daemon dies right after Commit; status and handoffctl tell the truth', async () => {
    await using ws = new Workspace();
    const crash = join(ws.dir, 'crash-point');
    const sup = ws.start(['--config', ws.config('\n[probation]\nwindow = 0\n')], { HANDOFF_CRASH_FILE: crash });
    showOnFailure(sup);
    await sup.ready();
    const port = await sup.port();
    const load = new LoadDriver({ port, readers: 2, writers: 1, probeEveryMs: 5 }).start();
    await load.waitForProgress(20);
    writeFileSync(crash, 'successor:received-Commit SIGKILL\n');
    const up = await ws.ctl(['upgrade', '--env', 'KV_BUILD_ID=v2']);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/committed: .*; no daemon serves yet\nafter the handoff: the new daemon \(pid \d+\) died right after the commit point .*restarts the committed program/);
    const killed = Number(readFileSync(`${crash}.fired`, 'utf8').split(' ')[1]);
    let status = await sup.status();
    await waitUntil('a restarted daemon to serve', async () => {
      status = await sup.status();
      return status.lifecycle === 'serving' && (status.incumbent as { session: boolean } | null)?.session === true;
    }, 15_000, { context: () => sup.output });
    const health = JSON.parse(await scrape(`http://127.0.0.1:${port}/health`)) as { pid: number; buildId: string };
    expect(health.buildId).toBe('v2'); // the committed program, not the configured one
    expect(status).toMatchObject({ restarts: 1, incumbent: { pid: health.pid } });
    expect(health.pid).not.toBe(killed);
    expect(ws.daemons()).toEqual([health.pid]);
    const report = await load.stop();
    expect(report.errors).toMatchObject({ refused: 0, timeout: 0, non2xx: 0, other: 0 }); // resets: connections the killed daemon had accepted
    expect(await verifyLedger(port, load.ledger)).toEqual([]);
  });
});

describe('handoffctl and the trigger socket', () => {
  it('upgrade streams the phases and exits 0 on commit; status and --json work', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config()]);
    showOnFailure(sup);
    await sup.ready();
    const up = await ws.ctl(['upgrade']);
    expect(up.code).toBe(0);
    expect(up.stdout).toMatch(/phase awaitingHello \d+ ms → preparing/);
    expect(up.stdout).toMatch(/committed: handoff h-\S+ in \d+ ms/);
    const status = await ws.ctl(['status']);
    expect(status.stdout).toMatch(/daemon\s+pid \d+, build v1, generation 2/);
    const json = JSON.parse((await ws.ctl(['status', '--json'])).stdout) as { lifecycle: string; lastHandoff: { committed: boolean } };
    expect(json).toMatchObject({ lifecycle: 'serving', lastHandoff: { committed: true } });
  });

  it('exits 2 when the handoff rolls back', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config()]);
    showOnFailure(sup);
    await sup.ready();
    const up = await ws.ctl(['upgrade', '--command', '/nonexistent/bin/daemon']);
    expect(up.code).toBe(2);
    expect(up.stdout).toMatch(/rolled back: .*HANDOFF_(SPAWN_FAILED|SUCCESSOR_EXITED)/);
  });

  it('a failing pre-handoff check leaves the incumbent serving undisturbed and shows the output', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config('\n[hooks]\npre_handoff = "echo broken build >&2; exit 3"\n')]);
    showOnFailure(sup);
    const before = await sup.ready();
    const up = await ws.ctl(['upgrade']);
    expect(up.code).toBe(1);
    expect(up.stderr).toMatch(/HANDOFF_CHECK_FAILED: the pre-handoff check failed \(exit 3\).*nothing was changed/);
    expect(up.stderr).toContain('broken build');
    const after = await sup.status();
    expect((after.incumbent as { pid: number; generation: number })).toMatchObject({ pid: (before.incumbent as { pid: number }).pid, generation: 1 });
    expect(after.lastHandoff).toBeNull();
  });

  it('answers garbage and oversized requests with an error line, and keeps serving', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config()]);
    showOnFailure(sup);
    await sup.ready();
    expect(JSON.parse(await raw(ws.trigger, 'rm -rf /\n'))).toMatchObject({ type: 'error', code: 'HANDOFF_BAD_REQUEST' });
    expect(JSON.parse(await raw(ws.trigger, '{"cmd":\n'))).toMatchObject({ type: 'error', message: 'the request is not valid JSON' });
    expect(JSON.parse(await raw(ws.trigger, Buffer.from([0xff, 0xfe, 0x00, 0x0a])))).toMatchObject({ type: 'error' });
    expect(JSON.parse(await raw(ws.trigger, 'x'.repeat(70 * 1024)))).toMatchObject({ type: 'error', message: expect.stringMatching(/longer than 65536 bytes/) });
    expect((await sup.status()).lifecycle).toBe('serving');
  });

  it('answers a concurrent upgrade with "in progress", and status during a handoff shows its phase', async () => {
    await using ws = new Workspace();
    // The incumbent's seal takes 1.5 s, so the handoff is in progress long enough to look at it.
    const sup = ws.start(['--config', ws.config('', { KV_SEAL_DELAY_MS: '1500' })]);
    showOnFailure(sup);
    await sup.ready();
    const phases: string[] = [];
    const first = ask(ws.trigger, { cmd: 'upgrade' }, (a) => {
      if (a.type === 'phase') phases.push(String(a.phase));
    });
    await waitUntil('the handoff to reach sealing', () => phases.includes('sealing'), 20_000, { context: () => sup.output });
    const status = await sup.status();
    expect(status.handoff).toMatchObject({ phase: 'sealing' });
    const second = await ws.ctl(['upgrade']);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/HANDOFF_IN_PROGRESS: handoff h-\S+ is in progress \(phase sealing\)/);
    expect((await first).find((a) => a.type === 'result')).toMatchObject({ committed: true });
  });

  it('stop makes the supervisor exit 0', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config()]);
    showOnFailure(sup);
    await sup.ready();
    expect((await ws.ctl(['stop'])).code).toBe(0);
    expect(await sup.exited).toBe(0);
  });

  it('binds the trigger socket mode 0600 and drops a client that sends nothing within 5 s', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config()]);
    showOnFailure(sup);
    await sup.ready();
    expect(statSync(ws.trigger).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await raw(ws.trigger, ''))).toMatchObject({ type: 'error', message: expect.stringMatching(/no complete request line within 5000 ms/) });
  });

  it('reports an unreachable supervisor with exit 1 and what to check', async () => {
    await using ws = new Workspace();
    const r = await ws.ctl(['status']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot reach the supervisor .* is the supervisor running\?/);
  });
});

describe('hooks', () => {
  it('runs pre_start before the daemon and post_stop after it stopped', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config('\n[hooks]\npre_start = "echo started > pre_start.txt"\npost_stop = "ls data > post_stop.txt"\n')]);
    showOnFailure(sup);
    await sup.ready();
    expect(readFileSync(join(ws.dir, 'pre_start.txt'), 'utf8')).toBe('started\n');
    expect(existsSync(join(ws.dir, 'post_stop.txt'))).toBe(false);
    expect((await ws.ctl(['stop'])).code).toBe(0);
    expect(await sup.exited).toBe(0);
    expect(readFileSync(join(ws.dir, 'post_stop.txt'), 'utf8')).toContain('kv.log');
  });

  it('does not start the daemon when pre_start fails, and shows its output', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config('\n[hooks]\npre_start = "echo migrations failed >&2; exit 7"\n')]);
    expect(await sup.exited).toBe(1);
    expect(sup.output).toMatch(/the pre_start hook failed \(exit 7\)[\s\S]*migrations failed/);
    expect(ws.daemons()).toEqual([]);
  });
});

describe('child supervision and metrics', () => {
  it('restarts a dying daemon with growing delays, gives up on a crash loop with a clear status, and starts it again on upgrade', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config('\n[restart]\ninitial_delay = 50\nmax_failures = 3\nwindow = 60000\n', { KV_DIE_AFTER_MS: '300' })]);
    showOnFailure(sup);
    await sup.ready();
    let status = await sup.status();
    await waitUntil('the supervisor to give up', async () => {
      status = await sup.status();
      return status.lifecycle === 'failed';
    }, 30_000, { context: () => sup.output });
    expect(status).toMatchObject({ lifecycle: 'failed', restarts: 3, incumbent: null });
    expect(status.failure).toMatch(/4 failures within 60000 ms is a crash loop \(limit 3\), and no other known-good version is left to fall back to; fix the daemon, then "handoffctl upgrade" starts it/);
    const events = sup.output.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg?: string; delayMs?: number });
    const delays = events.filter((e) => e.msg === 'restart').map((e) => e.delayMs);
    expect(delays).toEqual([50, 100, 200]);
    const text = await ws.ctl(['status']);
    expect(text.stdout).toMatch(/daemon +none serves\n[\s\S]*failure .*crash loop.*; fix the daemon, then "handoffctl upgrade" starts it\n$/);
    // No dead end: an upgrade with a fixed program starts it afresh.
    const up = await ws.ctl(['upgrade', '--env', 'KV_DIE_AFTER_MS=']);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/^started: no daemon served, so the supervisor started one; now serving pid (\d+)/m);
    status = await sup.status();
    expect(status).toMatchObject({ lifecycle: 'serving', failure: null, program: { env: { KV_DIE_AFTER_MS: '' } } });
  });

  it('serves Prometheus metrics: handoffs by outcome, durations, generation and pid', async () => {
    await using ws = new Workspace();
    const sup = ws.start(['--config', ws.config('\n[supervisor]\nmetrics = "127.0.0.1:0"\n')]);
    showOnFailure(sup);
    const status = await sup.ready();
    expect((await ws.ctl(['upgrade'])).code).toBe(0);
    const text = await scrape(String(status.metrics));
    expect(text).toMatch(/^handoff_handoffs_total\{outcome="committed"\} 1$/m);
    expect(text).toMatch(/^handoff_duration_seconds_count 1$/m);
    expect(text).toMatch(/^handoff_phase_duration_seconds_count\{phase="sealing"\} 1$/m);
    expect(text).toMatch(/^handoff_daemon_generation 2$/m);
    const pid = (await sup.status()).incumbent as { pid: number };
    expect(text).toMatch(new RegExp(`^handoff_daemon_pid ${String(pid.pid)}$`, 'm'));
  });
});

describe('--daemon', () => {
  it('detaches, logs to a file and keeps serving', async () => {
    await using ws = new Workspace();
    const parent = ws.start(['--config', ws.config(), '--daemon']);
    showOnFailure(parent);
    expect(await parent.exited).toBe(0);
    expect(parent.output).toMatch(/running as pid \d+; log: .*supervisor\.log/);
    const pid = Number(/running as pid (\d+)/.exec(parent.output)?.[1]);
    const [status] = await ask(ws.trigger, { cmd: 'status' });
    expect(status).toMatchObject({ type: 'status', pid, lifecycle: 'serving' });
    expect(readFileSync(join(ws.runtimeDir, 'supervisor.log'), 'utf8')).toMatch(/"msg":"serving"/);
    await ask(ws.trigger, { cmd: 'stop' });
    const alive = (): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    await waitUntil('the detached supervisor to exit', () => !alive(), 15_000);
  });
});

/** Runs a command under a pseudo-terminal (util-linux `script`), so that it sees a TTY. */
function onTerminal(command: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): ChildProcess & { output: () => string } {
  const line = command.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  const child = spawn('script', ['-qec', line, '/dev/null'], { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  // Without colours, so the text can be matched.
  const ansi = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g');
  return Object.assign(child, { output: () => out.replace(ansi, '') });
}

describe('on a terminal', () => {
  it('handoffctl upgrade shows a progress display; the supervisor logs human-readable lines', async () => {
    await using ws = new Workspace();
    const env = { ...process.env };
    delete env.HANDOFF_LOG_FORMAT;
    const sup = onTerminal([process.execPath, MAIN, '--config', ws.config()], { cwd: ws.dir, env });
    try {
      await waitUntil('the supervisor to log "serving"', () => /: serving/.test(sup.output()), 20_000, { context: () => sup.output() });
      // pino-pretty on a TTY: "[time] INFO (pid): message", not JSON.
      expect(sup.output()).toMatch(/INFO.*: serving/);
      expect(sup.output()).not.toMatch(/^\{"level"/m);
      const ctl = onTerminal([process.execPath, CTL, '--socket', ws.trigger, 'upgrade']);
      const code = await new Promise((resolve) => ctl.once('exit', resolve));
      expect(code).toBe(0);
      expect(ctl.output()).toMatch(/✓ awaitingHello \d+ ms → preparing/);
      expect(ctl.output()).toMatch(/committed: handoff h-\S+/);
    } finally {
      // The supervisor runs in the pty's own session: stop it through its socket, and script ends with it.
      const exited = new Promise((resolve) => sup.once('exit', resolve));
      await ask(ws.trigger, { cmd: 'stop' }).catch(() => []);
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))]);
      if (sup.exitCode === null && sup.pid) process.kill(-sup.pid, 'SIGKILL');
    }
  });
});
