import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DataDirLock, PID_FILE } from './lock.js';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-lock-'));
  dirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('DataDirLock', () => {
  it('is exclusive, names its holder, and frees on release', async () => {
    const dir = tempDir();
    const lock = await DataDirLock.acquire(dir);
    expect(lock.state).toBe('held');
    expect(readFileSync(join(dir, PID_FILE), 'utf8').trim()).toBe(String(process.pid));
    expect(DataDirLock.probe(dir)).toEqual({ held: true, pid: process.pid, pidAlive: true });
    await expect(DataDirLock.acquire(dir)).rejects.toMatchObject({
      code: 'HANDOFF_LOCK_HELD',
      message: expect.stringMatching(new RegExp(`locked by pid ${process.pid} \\(alive\\).*stop that process`)),
    });
    lock.release();
    lock.release(); // idempotent
    expect(lock.state).toBe('released');
    expect(DataDirLock.probe(dir).held).toBe(false);
    (await DataDirLock.acquire(dir)).release();
  });

  it('is freed by the kernel when its holder is SIGKILLed', async () => {
    const dir = tempDir();
    const lockModule = new URL('../dist/lock.js', import.meta.url).href;
    const child = spawn(process.execPath, ['--input-type=module', '-e', `const { DataDirLock } = await import(${JSON.stringify(lockModule)}); await DataDirLock.acquire(${JSON.stringify(dir)}); console.log('locked'); setInterval(() => {}, 1000);`], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.once('data', () => { resolve(); });
        child.once('exit', (code) => { reject(new Error(`the lock holder exited (${String(code)})`)); });
      });
      expect(DataDirLock.probe(dir)).toMatchObject({ held: true, pid: child.pid });
      await expect(DataDirLock.acquire(dir)).rejects.toMatchObject({ code: 'HANDOFF_LOCK_HELD' });
      child.kill('SIGKILL');
      // Waits (bounded) for the kernel to free it; no operator, no stale timeout.
      const lock = await DataDirLock.acquire(dir, { waitMs: 5_000 });
      expect(lock.state).toBe('held');
      lock.release();
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('says what to do when the data directory is missing', async () => {
    await expect(DataDirLock.acquire('/nonexistent/handoff-data')).rejects.toMatchObject({ code: 'HANDOFF_LOCK_FAILED', message: expect.stringMatching(/exists and is writable/) });
  });

  it('waits for a holder whose pid file names a dead process (stale) but not for a live one', async () => {
    const dir = tempDir();
    const lock = await DataDirLock.acquire(dir);
    const started = Date.now();
    await expect(DataDirLock.acquireOrBreakStale(dir, { staleWaitMs: 5_000 })).rejects.toMatchObject({ code: 'HANDOFF_LOCK_HELD' });
    expect(Date.now() - started).toBeLessThan(4_000); // a live holder fails at once, it is not waited for
    lock.release();
  });
});
