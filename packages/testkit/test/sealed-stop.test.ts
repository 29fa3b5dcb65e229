/**
 * A sealed incumbent whose supervisor died after Begin tries to resume, but its successor
 * holds the lock; the recovering supervisor stops it with SIGTERM meanwhile (PROTOCOL.md §13,
 * §15). It must stop without sealing a second time (the kv daemon's second seal failed on its
 * closed log: "stop failed", exit 1) and exit 0. The test plays the supervisor that dies and
 * the successor holding the lock, so the case runs every time; the crash matrix meets it only
 * when its race happens.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataDirLock } from '@handoff/core';
import { capabilities, encodeFrame } from '@handoff/protocol';
import { describe, expect, it, onTestFailed, onTestFinished } from 'vitest';
import { BARE_HEARTBEAT_MS, BareDaemon, ControlClient, helloProblem } from '../src/conformance/bare.js';
import { getJson } from '../src/http.js';
import { waitForValue } from '../src/wait.js';
import { KV_MAIN } from './kv.js';

describe('a sealed incumbent stopped after its supervisor died', () => {
  it('exits 0 on SIGTERM while it waits for the lock its successor holds, without sealing again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sealed-stop-'));
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir);
    const daemon = new BareDaemon({ command: process.execPath, args: [KV_MAIN], env: {} }, dataDir, join(dir, 'control.sock'), {});
    onTestFinished(() => {
      daemon.kill();
      rmSync(dir, { recursive: true, force: true });
    });
    onTestFailed(() => {
      console.log(`the kv daemon's output:\n${daemon.output()}`);
    });
    await waitForValue('the kv daemon to serve', async () => ((await getJson(daemon.port, '/health'))?.pid === daemon.pid ? true : undefined), 20_000);
    const client = await waitForValue('its control socket', () => ControlClient.connect(daemon.controlSocket, 1_000).catch(() => undefined), 10_000);
    const types = (): string[] => client.frames.map((f) => (f.message as { type?: string } | undefined)?.type ?? `invalid frame (${f.error ?? ''})`);
    const context = { context: () => `frames: ${types().join(', ')}\n${daemon.output()}` };
    // A live supervisor until it dies.
    const beat = setInterval(() => {
      if (!client.closed) client.write(encodeFrame({ type: 'Heartbeat', ts: Date.now() }, 'toDaemon'));
    }, BARE_HEARTBEAT_MS);
    try {
      expect(helloProblem(await client.first(), 'incumbent', daemon.pid)).toBeNull();
      client.write(encodeFrame({ type: 'HelloAck', version: 1, handoffId: null, capabilities: capabilities('SealProgress', 'RecoverFromDisk') }, 'toDaemon'));
      client.write(encodeFrame({ type: 'PrepareHandoff', handoffId: 'sealed-stop', successorPid: process.pid, deadlineMs: 5_000, drainGraceMs: 100, cutWork: false, moveConns: false }, 'toDaemon'));
      await waitForValue('Drained', () => (types().includes('Drained') ? true : undefined), 6_000, context);
      client.write(encodeFrame({ type: 'SealRequest', handoffId: 'sealed-stop' }, 'toDaemon'));
      await waitForValue('SealComplete', () => (types().includes('SealComplete') ? true : undefined), 10_000, context);
      // The successor takes the lock (after Begin)...
      const successorLock = await DataDirLock.acquire(dataDir);
      onTestFinished(() => {
        successorLock.release();
      });
    } finally {
      // ...and the supervisor dies: the incumbent tries to resume, sealed, retrying the lock (3 s) until stopped.
      clearInterval(beat);
      client.destroy();
    }
    process.kill(daemon.pid, 'SIGTERM');
    const exit = await waitForValue('the daemon to exit', () => daemon.exit, 15_000);
    expect(daemon.output()).not.toMatch(/stop failed/);
    expect(exit).toEqual({ code: 0, signal: null });
    // Stopped by the signal, not gone because the lock stayed taken.
    expect(daemon.output()).toMatch(/"reason":"stopped: drained and sealed"/);
  }, 60_000);
});
