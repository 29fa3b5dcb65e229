/**
 * In-thread mode: versions imported into the host's thread under a URL of their own, calls
 * as plain function calls (callSync) still counted for the drain, a swap, a drain of async
 * calls, a rollback, a load that never settles abandoned.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HotPlugin } from '../src/index.js';
import { Gates, METHODS, Sandbox, deadline, plugin, rejection, watchReload } from './helpers.js';
import type { Methods } from './helpers.js';

let sandbox: Sandbox;
let gates: Gates;
beforeEach(() => {
  sandbox = new Sandbox();
  gates = new Gates();
});
afterEach(async () => {
  gates.close();
  await sandbox.cleanup();
});

async function loadV1(probation = { ms: 0, maxFailures: 0 }): Promise<HotPlugin<Methods>> {
  return sandbox.track(await HotPlugin.load<Methods>({ name: 'fast', file: sandbox.write('v1', plugin('v1')), methods: METHODS, mode: 'inThread', probation }));
}

describe('in-thread mode', () => {
  it('callSync returns the method’s value itself; call a promise; both counted', async () => {
    const hot = await loadV1();
    expect(hot.callSync('apply', 1)).toEqual({ version: 'v1', x: 1 });
    expect(await hot.call('apply', 2)).toEqual({ version: 'v1', x: 2 });
    expect(() => hot.callSync('fail', 'sync error')).toThrow(RangeError);
    // call() never throws: a method's synchronous throw is a rejection.
    const rejected = hot.call('fail', 'as a rejection');
    expect(await rejection(rejected)).toMatchObject({ name: 'RangeError', message: 'as a rejection' });
    expect(hot.stats).toMatchObject({ mode: 'inThread', calls: 4, callsFailed: 2, workers: 0, version: 'v1', inFlight: { v1: 0 } });
  });

  it('swaps to a new version and drains the old one’s async calls before cleaning it up', async () => {
    const hot = await loadV1();
    const onOld = hot.call('gate', 'old');
    await deadline(gates.waiting('old'), 10_000, 'the gated call');
    const watch = watchReload();
    const reloading = hot.reload({ file: sandbox.write('v2', plugin('v2')), onProgress: watch.onProgress });
    await deadline(watch.swapped, 10_000, 'the swap');
    expect(hot.callSync('apply', 1)).toEqual({ version: 'v2', x: 1 });
    expect(hot.stats.inFlight).toEqual({ v1: 1, v2: 0 });
    // The old version's call is still running: the reload waits for it.
    await deadline(
      (async () => {
        while (hot.state.kind !== 'draining') await new Promise((resolve) => setImmediate(resolve));
      })(),
      10_000,
      'the draining state',
    );
    gates.open('old');
    expect(await onOld).toEqual({ version: 'v1', x: 'old' });
    const report = await deadline(reloading, 10_000, 'the reload');
    expect(report).toMatchObject({ outcome: 'reloaded', from: 'v1', to: 'v2', drain: { version: 'v1', completed: 1, cut: [] } });
    expect(watch.events.at(-1)).toEqual({ phase: 'cleanedUp', detail: 'v1 (generation 1) released (in-thread mode: its module stays in memory)' });
  });

  it('a callSync that returned a promise stays counted until it settles (and is drained)', async () => {
    const hot = await loadV1();
    const pending = hot.callSync('gate', 'sync');
    expect(hot.stats.inFlight).toEqual({ v1: 1 });
    gates.open('sync');
    expect(await pending).toEqual({ version: 'v1', x: 'sync' });
    expect(hot.stats.inFlight).toEqual({ v1: 0 });
  });

  it('rolls back a version that fails during probation', async () => {
    const hot = await loadV1({ ms: 60_000, maxFailures: 0 });
    const watch = watchReload();
    const reloading = hot.reload({ file: sandbox.write('v2', plugin('v2')), onProgress: watch.onProgress });
    await deadline(watch.swapped, 10_000, 'the swap');
    expect(() => hot.callSync('fail', 'bug in v2')).toThrow('bug in v2');
    const report = await deadline(reloading, 10_000, 'the rollback');
    expect(report).toMatchObject({ outcome: 'rolledBack', cause: 'probation', version: 'v1' });
    expect(hot.callSync('apply', 1)).toEqual({ version: 'v1', x: 1 });
  });

  it('cuts an async call still running at the drain deadline', async () => {
    const hot = sandbox.track(await HotPlugin.load<Methods>({ name: 'fast', file: sandbox.write('v1', plugin('v1')), methods: METHODS, mode: 'inThread', drainTimeoutMs: 100, probation: { ms: 0, maxFailures: 0 } }));
    const hung = rejection(hot.call('hang'));
    const report = await hot.reload({ file: sandbox.write('v2', plugin('v2')) });
    expect(report).toMatchObject({ outcome: 'reloaded', cutCalls: 1, drain: { cut: [{ method: 'hang' }] } });
    expect(await hung).toMatchObject({ code: 'CUT' });
    expect(hot.stats.callsCut).toBe(1);
  });

  it('a load whose top-level await never settles is abandoned at the load timeout (LOAD_TIMEOUT); the old version serves on', async () => {
    const hot = sandbox.track(await HotPlugin.load<Methods>({ name: 'fast', file: sandbox.write('v1', plugin('v1')), methods: METHODS, mode: 'inThread', loadTimeoutMs: 200 }));
    const report = await hot.reload({ file: sandbox.write('stuck', `${plugin('stuck')}\nawait new Promise(() => {});`) });
    expect(report).toMatchObject({ outcome: 'failed', cause: 'loadTimeout', version: 'v1' });
    expect(report.error).toMatch(/stuck\.mjs did not finish loading within 200 ms \(import, setup\(\), selfTest\(\)\): abandoned \(in-thread mode cannot stop a load; its module stays in memory\)$/);
    expect(hot.callSync('apply', 1)).toEqual({ version: 'v1', x: 1 });
  });

  it('reloading the same file loads it again (a fresh module URL), labelled by its content', async () => {
    const file = sandbox.write('same', plugin('').replace("export const version = \"\";", 'export const version = undefined;'));
    const hot = sandbox.track(await HotPlugin.load<Methods>({ name: 'fast', file, methods: METHODS, mode: 'inThread', probation: { ms: 0, maxFailures: 0 } }));
    const first = hot.stats.version;
    expect(first).toMatch(/^[0-9a-f]{12}$/);
    sandbox.write('same', `${plugin('').replace("export const version = \"\";", 'export const version = undefined;')}\n// edited`);
    const report = await hot.reload();
    expect(report.outcome).toBe('reloaded');
    expect(report.from).toBe(first);
    expect(report.to).toMatch(/^[0-9a-f]{12}$/);
    expect(report.to).not.toBe(first);
    expect(hot.stats.generation).toBe(2);
  });

  it('callSync on a worker plugin is WRONG_MODE', async () => {
    const hot = sandbox.track(await HotPlugin.load<Methods>({ name: 'slow', file: sandbox.write('w', plugin('w')), methods: METHODS }));
    expect(() => hot.callSync('apply', 1)).toThrow(expect.objectContaining({ code: 'WRONG_MODE' }));
  });
});
