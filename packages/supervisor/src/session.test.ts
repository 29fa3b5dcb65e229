import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DataDirLock } from '@handoff/core';
import { LOCK_MISMATCH_MS, SessionConnector } from './session.js';

const KV_MAIN = join(dirname(createRequire(import.meta.url).resolve('@handoff/example-kv/package.json')), 'dist', 'main.js');

/** A kv daemon serving `dataDir` (its lock) with its control socket at `controlSocket`; resolves once it serves. */
async function kvOn(dataDir: string, controlSocket: string): Promise<ChildProcess & { pid: number }> {
  const child = spawn(process.execPath, [KV_MAIN], { env: { ...process.env, KV_DATA_DIR: dataDir, KV_PORT: '0', HANDOFF_CONTROL_SOCKET: controlSocket }, stdio: ['ignore', 'pipe', 'inherit'] });
  onTestFinished(() => {
    child.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      reject(new Error(`kv did not serve within 10 s: ${out}`));
    }, 10_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('"event":"serving"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`kv exited with ${String(code)}: ${out}`));
    });
  });
  return child as ChildProcess & { pid: number };
}

function workspace(): { configured: string; other: string; controlSocket: string } {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-session-'));
  onTestFinished(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const configured = join(dir, 'data');
  const other = join(dir, 'other');
  mkdirSync(configured);
  mkdirSync(other);
  return { configured, other, controlSocket: join(dir, 'control.sock') };
}

describe('SessionConnector.awaitSession', () => {
  it('gives up within a couple of seconds, saying so, on a daemon that answers but locks another data directory', async () => {
    const { configured, other, controlSocket } = workspace();
    const daemon = await kvOn(other, controlSocket);
    const connector = new SessionConnector({ controlSocket, dataDir: configured, capabilities: 0, startTimeoutMs: 15_000 });
    const started = Date.now();
    expect(await connector.awaitSession(daemon.pid, () => false)).toBeNull();
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(LOCK_MISMATCH_MS);
    expect(took).toBeLessThan(LOCK_MISMATCH_MS + 3_000);
    expect(connector.refusal(daemon.pid)).toBe(
      `the daemon (pid ${daemon.pid}) answered on ${controlSocket} but does not hold the lock on ${configured}: its data directory probably differs from the configured one ([daemon] data_dir); make them the same (a daemon without a data directory: remove data_dir)`,
    );
    // The same daemon on the configured directory is taken at once.
    const right = new SessionConnector({ controlSocket, dataDir: other, capabilities: 0, startTimeoutMs: 15_000 });
    const session = await right.awaitSession(daemon.pid, () => false);
    expect(session?.hello.pid).toBe(daemon.pid);
    session?.channel.close('done');
  });

  it('keeps waiting (to the start timeout) while another process holds the lock, as during a handoff', async () => {
    const { configured, other, controlSocket } = workspace();
    const daemon = await kvOn(other, controlSocket);
    const lock = await DataDirLock.acquire(configured);
    onTestFinished(() => {
      lock.release();
    });
    const connector = new SessionConnector({ controlSocket, dataDir: configured, capabilities: 0, startTimeoutMs: LOCK_MISMATCH_MS + 2_000 });
    const started = Date.now();
    expect(await connector.awaitSession(daemon.pid, () => false)).toBeNull();
    expect(Date.now() - started).toBeGreaterThanOrEqual(LOCK_MISMATCH_MS + 2_000);
    expect(connector.refusal(daemon.pid)).toBeNull();
  });
});
