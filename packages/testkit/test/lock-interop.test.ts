/**
 * The data-directory lock across languages (PROTOCOL.md section 14): the Node daemon's
 * open-file-description lock and a classic POSIX record lock taken from Python
 * (`fcntl.lockf`) exclude each other; a daemon that takes `flock(2)` instead — which excludes
 * neither — is refused by the supervisor with a line that says so.
 */
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFinished } from 'vitest';
import { lockKindsHeldBy } from '@handoff/core';
import { waitForValue, waitUntil } from '../src/index.js';
import { Workspace, runToExit, showOnFailure } from './bin.js';
import { KV_MAIN } from './kv.js';

const FLOCK_DAEMON = fileURLToPath(new URL('fixtures/flock-daemon.py', import.meta.url));

/** A configuration running the lock fixture with `env`. */
function fixtureConfig(env: Record<string, string>): string {
  const vars = Object.entries(env).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join(', ');
  return `[daemon]\ncommand = "python3"\nargs = [${JSON.stringify(FLOCK_DAEMON)}]\nenv = { ${vars} }\ndata_dir = "data"\n\n[[listeners]]\nname = "http"\naddress = "127.0.0.1:0"\n\n[sockets]\nruntime_dir = "run"\n`;
}

/** A Python process holding `<dataDir>/.handoff.lock` with `how` until killed; resolves once it holds it. */
async function pythonHolder(dataDir: string, how: 'lockf' | 'flock'): Promise<ChildProcessWithoutNullStreams> {
  const call = how === 'lockf' ? 'fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)' : 'fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)';
  const code = `import fcntl, os, sys\nfd = os.open(os.path.join(sys.argv[1], ".handoff.lock"), os.O_RDWR | os.O_CREAT, 0o600)\n${call}\nprint("held", flush=True)\nsys.stdin.read()\n`;
  const child = spawn('python3', ['-c', code, dataDir], { stdio: ['pipe', 'pipe', 'pipe'] });
  onTestFinished(() => {
    child.kill('SIGKILL');
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  await waitUntil(`python3 to take the lock with ${how}`, () => out.includes('held') || child.exitCode !== null, 10_000);
  expect(out, out).toContain('held');
  return child;
}

/** Tries `fcntl.lockf` from Python once: "got" or "blocked". */
async function pythonTryLockf(dataDir: string): Promise<string> {
  const code = 'import fcntl, os, sys\nfd = os.open(os.path.join(sys.argv[1], ".handoff.lock"), os.O_RDWR | os.O_CREAT, 0o600)\ntry:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    print("got")\nexcept BlockingIOError:\n    print("blocked")\n';
  const r = await runToExit(['python3', '-c', code, dataDir]);
  return `${r.stdout}${r.stderr}`.trim();
}

/** The kv daemon run bare (no supervisor) on `dataDir`, collecting its output. */
function bareKv(dataDir: string): { child: ChildProcessWithoutNullStreams; output: () => string } {
  const child = spawn(process.execPath, [KV_MAIN], { env: { ...process.env, KV_DATA_DIR: dataDir, KV_PORT: '0' } });
  onTestFinished(() => {
    child.kill('SIGKILL');
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  return { child, output: () => out };
}

// HANDOFF_PYTHON_TESTS=0: .ci/run's second pass (Node 24), where only the supervisor's Node changed.
describe.skipIf(process.env.HANDOFF_PYTHON_TESTS === '0')('the data-directory lock across languages', () => {
  it('a Python fcntl.lockf holder keeps the Node daemon out, and the Node daemon keeps a Python lockf out', async () => {
    await using ws = new Workspace();
    const holder = await pythonHolder(ws.dataDir, 'lockf');
    expect(lockKindsHeldBy(holder.pid ?? 0, ws.dataDir)).toEqual(['posix']);
    const blocked = bareKv(ws.dataDir);
    const code = await new Promise<number | null>((resolve) => blocked.child.once('close', resolve));
    expect(code, blocked.output()).toBe(1);
    expect(blocked.output()).toMatch(/handoff-kv: the data directory \S+ is locked by/);
    holder.kill('SIGKILL');
    await waitUntil('the Python holder to be gone', () => holder.exitCode !== null || holder.signalCode !== null, 5_000);

    const kv = bareKv(ws.dataDir);
    await waitUntil('the kv daemon to serve', () => kv.output().includes('"event":"serving"'), 15_000, { context: kv.output });
    expect(lockKindsHeldBy(kv.child.pid ?? 0, ws.dataDir)).toEqual(['ofd']);
    expect(await pythonTryLockf(ws.dataDir)).toBe('blocked');
    kv.child.kill('SIGKILL');
    await waitUntil('the kv daemon to be gone', () => kv.child.exitCode !== null || kv.child.signalCode !== null, 5_000);
    expect(await pythonTryLockf(ws.dataDir)).toBe('got');
  });

  it('flock(2) excludes neither: it is seen as such', async () => {
    await using ws = new Workspace();
    const holder = await pythonHolder(ws.dataDir, 'flock');
    expect(lockKindsHeldBy(holder.pid ?? 0, ws.dataDir)).toEqual(['flock']);
    // A record lock is still free to take while flock is held: two writers would be possible.
    expect(await pythonTryLockf(ws.dataDir)).toBe('got');
  });

  it('the supervisor refuses a daemon that locks with flock(2), at once, with one line saying what to do', async () => {
    await using ws = new Workspace();
    const file = join(ws.dir, 'handoff.toml');
    writeFileSync(file, fixtureConfig({}));
    const started = Date.now();
    const sup = ws.start(['--config', file]);
    showOnFailure(sup);
    expect(await sup.exited).toBe(1);
    const lines = sup.output.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'));
    expect(lines, sup.output).toEqual([expect.stringMatching(/^handoff-supervisor: the daemon could not start: the daemon \(pid \d+\) locks \S+\/data\/\.handoff\.lock with flock\(2\), which does not exclude the POSIX record lock other daemons take .*take an fcntl record lock instead .*PROTOCOL\.md section 14; /)]);
    // Refused on its first answer, not after the start timeout.
    expect(Date.now() - started).toBeLessThan(10_000);
    await waitUntil('every process of the workspace to be gone', () => ws.processes().length === 0, 10_000, { context: () => `left: ${ws.processes().join(', ')}` });
  });

  it('the kernel, not the pid file, says who holds the lock: a classic-lock daemon with no pid file is adopted', async () => {
    await using ws = new Workspace();
    const file = join(ws.dir, 'handoff.toml');
    writeFileSync(file, fixtureConfig({ FIXTURE_LOCK: 'lockf', FIXTURE_PID_FILE: '0' }));
    const sup = ws.start(['--config', file]);
    showOnFailure(sup);
    const status = await waitForValue('the supervisor to serve the fixture', async () => {
      const r = await ws.ctlWithConfig(['status', '--json']);
      const s = r.code === 0 ? (JSON.parse(r.stdout) as { lifecycle: string; incumbent: { pid: number; session: boolean } | null }) : null;
      return s?.lifecycle === 'serving' && s.incumbent?.session ? s.incumbent : null;
    }, 15_000, { context: () => sup.output });
    expect(lockKindsHeldBy(status.pid, ws.dataDir)).toEqual(['posix']);
    expect(existsSync(join(ws.dataDir, '.handoff.pid'))).toBe(false);
  });
});
