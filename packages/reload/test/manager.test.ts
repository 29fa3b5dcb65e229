/**
 * ReloadManager: plugins by name, reloads by name, stats and the Prometheus text; and the
 * API's refusals (RELOAD_IN_PROGRESS, UNKNOWN_PLUGIN, BAD_OPTIONS).
 */
import { afterEach, beforeEach, describe, expect, expectTypeOf, it } from 'vitest';
import { HotPlugin, PluginError, ReloadManager } from '../src/index.js';
import type { PluginOptions } from '../src/index.js';
import { METHODS, Sandbox, plugin, rejection } from './helpers.js';
import type { Methods } from './helpers.js';

let sandbox: Sandbox;
beforeEach(() => {
  sandbox = new Sandbox();
});
afterEach(async () => {
  await sandbox.cleanup();
});

async function twoPlugins(): Promise<{ manager: ReloadManager; worker: HotPlugin<Methods>; fast: HotPlugin<Methods> }> {
  const worker = sandbox.track(await HotPlugin.load<Methods>({ name: 'pricing', file: sandbox.write('pricing', plugin('p1')), methods: METHODS, probation: { ms: 0, maxFailures: 0 } }));
  const fast = sandbox.track(await HotPlugin.load<Methods>({ name: 'router', file: sandbox.write('router', plugin('r"1\\')), methods: METHODS, mode: 'inThread' }));
  return { manager: new ReloadManager([worker, fast]), worker, fast };
}

describe('ReloadManager', () => {
  it('finds plugins by name, reloads by name, and refuses unknown names and duplicates with the names it has', async () => {
    const { manager, worker } = await twoPlugins();
    expect(manager.names()).toEqual(['pricing', 'router']);
    expect(manager.get<Methods>('pricing')).toBe(worker);
    expect(() => manager.get('nope')).toThrow(new PluginError('UNKNOWN_PLUGIN', 'nope', 'no plugin named "nope"; the plugins: pricing, router'));
    expect(await rejection(manager.reload('nope'))).toMatchObject({ code: 'UNKNOWN_PLUGIN', message: 'no plugin named "nope"; the plugins: pricing, router' });
    expect(() => {
      manager.add(worker);
    }).toThrow(expect.objectContaining({ code: 'BAD_OPTIONS', message: 'a plugin named pricing was already added' }));

    const steps: { phase: string; detail: string }[] = [];
    const report = await manager.reload('pricing', { file: sandbox.write('pricing2', plugin('p2')), onProgress: (step) => steps.push(step) });
    // The fields the daemon library reads.
    expect(report).toMatchObject({ outcome: 'reloaded', version: 'p2', error: null, cutCalls: 0, durationMs: expect.any(Number) });
    expect(steps.map((s) => s.phase)).toContain('swapped');
    expect(await worker.call('apply', 1)).toEqual({ version: 'p2', x: 1 });
  });

  it('a second reload while one runs is RELOAD_IN_PROGRESS; the first completes', async () => {
    const { manager } = await twoPlugins();
    const first = manager.reload('pricing', { file: sandbox.write('pricing2', plugin('p2')) });
    expect(await rejection(manager.reload('pricing'))).toMatchObject({ code: 'RELOAD_IN_PROGRESS', plugin: 'pricing', message: expect.stringMatching(/^plugin pricing: a reload is already in progress \(preparing\)/) });
    expect((await first).outcome).toBe('reloaded');
    // Over: the next one may run.
    expect((await manager.reload('pricing')).outcome).toBe('reloaded');
  });

  it('stats of every plugin, and their metrics in the Prometheus text format', async () => {
    const { manager, worker, fast } = await twoPlugins();
    await worker.call('apply', 1);
    await rejection(worker.call('fail', 'x'));
    fast.callSync('apply', 1);
    await manager.reload('pricing', { file: sandbox.write('pricing2', plugin('p2')) });
    await manager.reload('router', { file: `${sandbox.dir}/missing.mjs` });

    const [pricing, router] = manager.stats();
    expect(pricing).toMatchObject({ name: 'pricing', mode: 'worker', state: 'active', version: 'p2', generation: 2, reloads: 1, failures: 0, rollbacks: 0, calls: 2, callsFailed: 1, callsCut: 0, inFlight: { p2: 0 }, lastOutcome: 'reloaded', workers: 1 });
    expect(router).toMatchObject({ name: 'router', mode: 'inThread', state: 'failed', version: 'r"1\\', reloads: 1, failures: 1, calls: 1, lastOutcome: 'failed', workers: 0 });

    const text = manager.metrics();
    const lines = text.split('\n');
    expect(text.endsWith('\n')).toBe(true);
    for (const [name, type] of [
      ['reloads_total', 'counter'],
      ['reload_failures_total', 'counter'],
      ['rollbacks_total', 'counter'],
      ['calls_total', 'counter'],
      ['calls_failed_total', 'counter'],
      ['calls_cut_total', 'counter'],
      ['in_flight', 'gauge'],
      ['last_reload_seconds', 'gauge'],
      ['info', 'gauge'],
    ] as const) {
      expect(lines).toContain(`# TYPE handoff_plugin_${name} ${type}`);
      expect(lines.some((l) => l.startsWith(`# HELP handoff_plugin_${name} `))).toBe(true);
    }
    expect(lines).toContain('handoff_plugin_reloads_total{plugin="pricing"} 1');
    expect(lines).toContain('handoff_plugin_reload_failures_total{plugin="router"} 1');
    expect(lines).toContain('handoff_plugin_calls_total{plugin="pricing"} 2');
    expect(lines).toContain('handoff_plugin_calls_failed_total{plugin="pricing"} 1');
    expect(lines).toContain('handoff_plugin_calls_cut_total{plugin="router"} 0');
    expect(lines).toContain('handoff_plugin_in_flight{plugin="pricing",version="p2"} 0');
    expect(lines).toContain('handoff_plugin_info{plugin="pricing",version="p2",state="active",mode="worker"} 1');
    // A label value is escaped (the router's version is r"1\).
    expect(lines).toContain('handoff_plugin_info{plugin="router",version="r\\"1\\\\",state="failed",mode="inThread"} 1');
    expect(lines.some((l) => /^handoff_plugin_last_reload_seconds\{plugin="pricing"\} \d+(\.\d+)?(e-?\d+)?$/.test(l))).toBe(true);
    expect(manager.metrics('app_')).toContain('app_rollbacks_total{plugin="router"} 0');

    await manager.close(1_000);
    expect(manager.stats().map((s) => [s.state, s.workers])).toEqual([
      ['closed', 0],
      ['closed', 0],
    ]);
  });
});

describe('contract types', () => {
  it('a plain interface is a contract (no index signature needed), and calls are typed by it', async () => {
    interface Greeter {
      apply(x: number): { version: string; x: number };
      later(x: number): Promise<{ version: string; x: number }>;
    }
    const hot = sandbox.track(await HotPlugin.load<Greeter>({ name: 'typed', file: sandbox.write('t', plugin('t')), methods: ['apply', 'later'], mode: 'inThread' }));
    expectTypeOf<Parameters<typeof hot.call>[0]>().toEqualTypeOf<'apply' | 'later'>();
    expectTypeOf(hot.call('later', 1)).toEqualTypeOf<Promise<{ version: string; x: number }>>();
    expectTypeOf(hot.callSync('apply', 1)).toEqualTypeOf<{ version: string; x: number }>();
    // @ts-expect-error -- a string is not apply()'s number
    expect(hot.callSync('apply', 'one')).toEqual({ version: 't', x: 'one' });
    expect(await hot.call('later', 2)).toEqual({ version: 't', x: 2 });
    const manager = new ReloadManager([hot]);
    expect(manager.get<Greeter>('typed')).toBe(hot);
  });
});

describe('HotPlugin.load options', () => {
  const base = (): PluginOptions<Methods> => ({ name: 'p', file: sandbox.write('v1', plugin('v1')), methods: METHODS });
  const cases: [string, (o: PluginOptions<Methods>) => unknown, RegExp][] = [
    ['a bad name', (o) => ({ ...o, name: 'has space' }), /^plugin \(unnamed\): the name "has space" is not 1–64 of/],
    ['no methods', (o) => ({ ...o, methods: [] }), /^plugin p: methods must list the contract/],
    ['a lifecycle export as a method', (o) => ({ ...o, methods: ['apply', 'setup'] }), /^plugin p: setup cannot be contract methods/],
    ['an unknown mode', (o) => ({ ...o, mode: 'fork' }), /^plugin p: mode must be 'worker' or 'inThread', not "fork"$/],
    ['a bad probation', (o) => ({ ...o, probation: { ms: -1, maxFailures: 0 } }), /^plugin p: probation must be/],
    ['options a worker cannot receive', (o) => ({ ...o, options: { f: () => 1 } }), /^plugin p: options must be structured-cloneable in worker mode/],
  ];
  for (const [title, change, message] of cases) {
    it(`refuses ${title} with BAD_OPTIONS`, async () => {
      const error = await rejection(HotPlugin.load(change(base()) as PluginOptions<Methods>));
      expect(error).toMatchObject({ code: 'BAD_OPTIONS' });
      expect(error.message).toMatch(message);
    });
  }

  it('a call to a method outside the contract is refused (CONTRACT), not sent', async () => {
    const hot = sandbox.track(await HotPlugin.load<Methods>(base()));
    const untyped = hot as unknown as HotPlugin<Record<string, () => unknown>>;
    expect(await rejection(untyped.call('dispose'))).toMatchObject({ code: 'CONTRACT', message: 'plugin p: dispose() is not in its contract (apply, later, fail, hang, gate)' });
    expect(hot.stats.calls).toBe(0);
  });
});
