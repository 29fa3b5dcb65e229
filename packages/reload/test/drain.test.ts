/**
 * The drain of a replaced version: calls in flight on it finish after the swap; one still
 * running at the drain deadline is cut — its caller rejected with CUT, the report and a
 * 'cut' progress event naming it, stats counting it — never dropped silently.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HotPlugin, PluginError } from '../src/index.js';
import { Gates, METHODS, Sandbox, deadline, plugin, rejection, watchReload } from './helpers.js';
import type { Methods } from './helpers.js';

let sandbox: Sandbox;
afterEach(async () => {
  await sandbox.cleanup();
});

describe('draining the replaced version (worker mode)', () => {
  it('a call still running at the drain deadline is cut: CUT for its caller, listed in the report, a cut event, counted', async () => {
    sandbox = new Sandbox();
    const gates = new Gates();
    try {
      const hot = sandbox.track(await HotPlugin.load<Methods>({ name: 'd', file: sandbox.write('v1', plugin('v1')), methods: METHODS, drainTimeoutMs: 300, probation: { ms: 0, maxFailures: 0 } }));
      const hung = rejection(hot.call('hang'));
      const finishing = hot.call('gate', 'finishes');
      await deadline(gates.waiting('finishes'), 10_000, 'the gated call');
      const watch = watchReload();
      const reloading = hot.reload({ file: sandbox.write('v2', plugin('v2')), onProgress: watch.onProgress });
      await deadline(watch.swapped, 10_000, 'the swap');
      // One call on the old version finishes after the swap; the other never does.
      gates.open('finishes');
      expect(await finishing).toEqual({ version: 'v1', x: 'finishes' });
      const report = await deadline(reloading, 10_000, 'the reload');

      const error = await hung;
      expect(error).toBeInstanceOf(PluginError);
      expect(error.code).toBe('CUT');
      expect(error.message).toMatch(/^plugin d version v1: hang\(\) was cut after \d+ ms: it was still running on the replaced version when the drain deadline \(drainTimeoutMs 300\) passed; whether it took effect is unknown$/);
      expect(report).toMatchObject({ outcome: 'reloaded', version: 'v2', cutCalls: 1, drain: { version: 'v1', completed: 1, cut: [{ method: 'hang', ageMs: expect.any(Number) }] } });
      const cut = watch.events.filter((e) => e.phase === 'cut');
      expect(cut).toHaveLength(1);
      expect(cut[0]!.detail).toMatch(/^1 call on v1 cut at the 300 ms deadline \(rejected with CUT\): hang\(\) running for \d+ ms$/);
      expect(watch.events.map((e) => e.phase)).toEqual(['preparing', 'swapped', 'draining', 'probation', 'cut', 'cleanedUp']);
      expect(hot.stats).toMatchObject({ callsCut: 1, callsFailed: 0, workers: 1, inFlight: { v2: 0 } });
      expect(await hot.call('apply', 1)).toEqual({ version: 'v2', x: 1 });
    } finally {
      gates.close();
    }
  });

  it('close() drains every version and cuts what still runs at its timeout', async () => {
    sandbox = new Sandbox();
    const hot = sandbox.track(await HotPlugin.load<Methods>({ name: 'd', file: sandbox.write('v1', plugin('v1')), methods: METHODS }));
    const hung = rejection(hot.call('hang'));
    const finishing = hot.call('later', 1);
    const report = await hot.close(200);
    expect(report).toEqual({ version: 'v1', completed: 1, cut: [{ method: 'hang', ageMs: expect.any(Number) }] });
    expect(await finishing).toEqual({ version: 'v1', x: 1 });
    expect(await hung).toMatchObject({ code: 'CUT' });
    expect(hot.state).toEqual({ kind: 'closed' });
    expect(hot.stats).toMatchObject({ workers: 0, callsCut: 1, state: 'closed' });
    expect(await rejection(hot.call('apply', 1))).toMatchObject({ code: 'CLOSED', message: 'plugin d is closed' });
    expect(await rejection(hot.reload())).toMatchObject({ code: 'CLOSED' });
    expect(await hot.close()).toBe(report); // idempotent
  });

  it('close() during a reload ends it: the reload rejects with CLOSED and every worker is gone', async () => {
    sandbox = new Sandbox();
    const hot = sandbox.track(await HotPlugin.load<Methods>({ name: 'd', file: sandbox.write('v1', plugin('v1')), methods: METHODS, probation: { ms: 60_000, maxFailures: 0 } }));
    const watch = watchReload();
    const reloading = rejection(hot.reload({ file: sandbox.write('v2', plugin('v2')), onProgress: watch.onProgress }));
    await watch.swapped;
    await hot.close(1_000);
    expect(await reloading).toMatchObject({ code: 'CLOSED' });
    expect(hot.stats.workers).toBe(0);
  });
});
