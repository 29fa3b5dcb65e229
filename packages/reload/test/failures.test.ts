/**
 * Every way a version can fail, in worker mode: at load the plugin is not created (a clear
 * PluginError); at a reload the report says why (outcome 'failed' before the swap,
 * 'rolledBack' after), and the version that served before answers the next call.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HotPlugin, PluginError } from '../src/index.js';
import type { HostSelfTest, PluginErrorCode, ReloadCause, ReloadProgress } from '../src/index.js';
import { METHODS, Sandbox, deadline, plugin, rejection, watchReload } from './helpers.js';
import type { Methods } from './helpers.js';

let sandbox: Sandbox;
beforeEach(() => {
  sandbox = new Sandbox();
});
afterEach(async () => {
  await sandbox.cleanup();
});

/** Loads v1 (worker mode) with a short load timeout and a long probation. */
async function loadV1(options: { probation?: { ms: number; maxFailures: number }; selfTest?: HostSelfTest<Methods> } = {}): Promise<HotPlugin<Methods>> {
  return sandbox.track(
    await HotPlugin.load<Methods>({
      name: 'p',
      file: sandbox.write('v1', plugin('v1')),
      methods: METHODS,
      loadTimeoutMs: 1_500,
      probation: options.probation ?? { ms: 60_000, maxFailures: 0 },
      ...(options.selfTest === undefined ? {} : { selfTest: options.selfTest }),
    }),
  );
}

interface BadCandidate {
  readonly title: string;
  /** The module's source; null: no file at all. */
  readonly source: string | null;
  readonly code: PluginErrorCode;
  readonly cause: ReloadCause;
  readonly message: RegExp;
}

const CANDIDATES: readonly BadCandidate[] = [
  { title: 'a module that does not exist', source: null, code: 'NOT_FOUND', cause: 'notFound', message: /^plugin p: no module file at \/.*bad\.mjs/ },
  {
    title: 'a module lacking a contract method',
    source: 'export const version = "bad"; export function apply() {} export function later() {} export function hang() {} export function gate() {}',
    code: 'CONTRACT',
    cause: 'contract',
    message: /bad\.mjs does not export fail\(\) as a function \(the contract: apply, later, fail, hang, gate; it exports apply, gate, hang, later\)$/,
  },
  { title: 'a module that throws at import', source: `${plugin('bad')}\nthrow new Error('no config file');`, code: 'LOAD', cause: 'load', message: /bad\.mjs threw at import: no config file$/ },
  { title: 'a module with a syntax error', source: 'export function apply( {', code: 'LOAD', cause: 'load', message: /bad\.mjs threw at import: SyntaxError: / },
  { title: 'a module whose setup() throws', source: plugin('bad', 'export async function setup() { throw new Error("port in use"); }'), code: 'LOAD', cause: 'load', message: /bad\.mjs setup\(\) threw: port in use$/ },
  { title: 'a module that exits its worker while loading', source: `${plugin('bad')}\nprocess.exit(3);`, code: 'LOAD', cause: 'load', message: /bad\.mjs: its worker exited with code 3 while loading$/ },
  {
    title: 'a module whose top-level await never settles',
    source: `${plugin('bad')}\nawait new Promise(() => {});`,
    code: 'LOAD_TIMEOUT',
    cause: 'loadTimeout',
    message: /bad\.mjs did not finish loading within 1500 ms \(import, setup\(\), selfTest\(\)\): its worker was terminated$/,
  },
  { title: 'a module stuck in an endless loop at import', source: `${plugin('bad')}\nfor (;;) {}`, code: 'LOAD_TIMEOUT', cause: 'loadTimeout', message: /did not finish loading within 1500 ms .*its worker was terminated$/ },
  { title: 'a module whose own selfTest() throws', source: plugin('bad', 'export async function selfTest() { throw new Error("checksum mismatch"); }'), code: 'SELF_TEST', cause: 'selfTest', message: /bad\.mjs failed its own selfTest\(\): checksum mismatch$/ },
];

describe('a candidate refused before the swap', () => {
  for (const bad of CANDIDATES) {
    it(`${bad.title}: ${bad.code} at load (no plugin), outcome 'failed' at reload (the old version serves on)`, async () => {
      const file = bad.source === null ? `${sandbox.dir}/bad.mjs` : sandbox.write('bad', bad.source);
      const error = await rejection(HotPlugin.load<Methods>({ name: 'p', file, methods: METHODS, loadTimeoutMs: 1_500 }));
      expect(error).toBeInstanceOf(PluginError);
      expect(error).toMatchObject({ code: bad.code, plugin: 'p' });
      expect(error.message).toMatch(bad.message);

      const hot = await loadV1();
      const phases: ReloadProgress['phase'][] = [];
      const report = await hot.reload({ file, onProgress: (p) => phases.push(p.phase) });
      expect(report).toMatchObject({ outcome: 'failed', version: 'v1', from: 'v1', cause: bad.cause, cutCalls: 0, drain: null });
      expect(report.error).toMatch(bad.message);
      expect(phases).not.toContain('swapped');
      expect(hot.state).toMatchObject({ kind: 'failed', version: { label: 'v1' }, reason: report.error });
      expect(await hot.call('apply', 1)).toEqual({ version: 'v1', x: 1 });
      // The refused candidate's worker is gone.
      expect(hot.stats).toMatchObject({ failures: 1, reloads: 1, workers: 1, version: 'v1' });
    });
  }

  it('a candidate the host selfTest refuses: SELF_TEST at load and at reload, naming its label', async () => {
    const selfTest: HostSelfTest<Methods> = async (call) => {
      const answer = await call('apply', 2);
      if (answer.version === 'wrong') throw new Error(`apply(2) answered ${JSON.stringify(answer)}`);
    };
    const wrong = sandbox.write('wrong', plugin('wrong'));
    const error = await rejection(HotPlugin.load<Methods>({ name: 'p', file: wrong, methods: METHODS, selfTest }));
    expect(error).toMatchObject({ code: 'SELF_TEST', message: expect.stringMatching(/^plugin p: wrong \(.*wrong\.mjs\) failed the host's selfTest: apply\(2\) answered \{"version":"wrong","x":2\}$/) });

    const hot = await loadV1({ selfTest });
    const report = await hot.reload({ file: wrong });
    expect(report).toMatchObject({ outcome: 'failed', cause: 'selfTest', from: 'v1', to: 'wrong', version: 'v1' });
    expect(await hot.call('apply', 3)).toEqual({ version: 'v1', x: 3 });
    expect(hot.stats.workers).toBe(1);
  });
});

describe('a version that fails after the swap, during its probation', () => {
  it('more failed calls than maxFailures: rolled back, the old version takes every call again', async () => {
    const hot = await loadV1({ probation: { ms: 60_000, maxFailures: 2 } });
    const watch = watchReload();
    const reloading = hot.reload({ file: sandbox.write('v2', plugin('v2')), onProgress: watch.onProgress });
    await deadline(watch.swapped, 10_000, 'the swap');
    expect(hot.state).toMatchObject({ kind: 'probation', version: { label: 'v2' }, previous: { label: 'v1' } });
    expect(await hot.call('apply', 1)).toEqual({ version: 'v2', x: 1 });
    // The plugin's own errors reach the caller as they are (message and name); the third one rolls back.
    for (const n of [1, 2, 3]) {
      const error = await rejection(hot.call('fail', `bad input ${n}`));
      expect(error).toMatchObject({ name: 'RangeError', message: `bad input ${n}` });
      expect(error).not.toBeInstanceOf(PluginError);
    }
    const report = await deadline(reloading, 10_000, 'the rollback');
    expect(report).toMatchObject({ outcome: 'rolledBack', cause: 'probation', version: 'v1', from: 'v1', to: 'v2', cutCalls: 0 });
    expect(report.error).toBe('plugin p: v2 failed 3 calls within 60000 ms of the swap (more than maxFailures 2), the last: fail(): bad input 3; rolled back to v1');
    expect(watch.events.map((p) => p.phase)).toEqual(['preparing', 'swapped', 'draining', 'probation', 'rollingBack', 'cleanedUp']);
    expect(hot.state).toMatchObject({ kind: 'rolledBack', version: { label: 'v1' }, reason: report.error });
    expect(await hot.call('apply', 4)).toEqual({ version: 'v1', x: 4 });
    expect(hot.stats).toMatchObject({ rollbacks: 1, callsFailed: 3, workers: 1 });
  });

  it('failures up to maxFailures do not roll back', async () => {
    const hot = await loadV1({ probation: { ms: 200, maxFailures: 1 } });
    const watch = watchReload();
    const reloading = hot.reload({ file: sandbox.write('v2', plugin('v2')), onProgress: watch.onProgress });
    await deadline(watch.swapped, 10_000, 'the swap');
    await rejection(hot.call('fail', 'once'));
    const report = await deadline(reloading, 10_000, 'the reload');
    expect(report).toMatchObject({ outcome: 'reloaded', version: 'v2', error: null, cause: null });
  });

  it('a crash of the new worker mid-call: its calls reject with CRASHED, and the plugin rolls back', async () => {
    const hot = await loadV1();
    const watch = watchReload();
    const reloading = hot.reload({ file: sandbox.write('v2', plugin('v2')), onProgress: watch.onProgress });
    await deadline(watch.swapped, 10_000, 'the swap');
    const inFlight = rejection(hot.call('hang'));
    const crashed = await rejection(hot.call('apply', '__exit'));
    expect(crashed).toMatchObject({ code: 'CRASHED', message: 'plugin p version v2 crashed (worker exited with code 1) during apply(); rolling back to v1' });
    expect(await inFlight).toMatchObject({ code: 'CRASHED', message: 'plugin p version v2 crashed (worker exited with code 1) during hang(); rolling back to v1' });
    const report = await deadline(reloading, 10_000, 'the rollback');
    expect(report).toMatchObject({ outcome: 'rolledBack', cause: 'crash', version: 'v1', to: 'v2', error: 'plugin p: v2 crashed during probation (worker exited with code 1); rolled back to v1' });
    expect(await hot.call('apply', 1)).toEqual({ version: 'v1', x: 1 });
    expect(hot.stats).toMatchObject({ rollbacks: 1, restarts: 0, workers: 1, lastCrash: 'v2 (generation 2): worker exited with code 1' });
  });
});

describe('a crash of the active version outside probation', () => {
  it('restarts it from its file once; calls made meanwhile wait for it and are answered', async () => {
    const hot = await loadV1();
    const inFlight = rejection(hot.call('hang'));
    expect(await hot.call('apply', '__throw')).toEqual({ version: 'v1', x: '__throw' });
    const error = await deadline(inFlight, 10_000, 'the crash');
    expect(error).toMatchObject({ code: 'CRASHED', message: 'plugin p version v1 crashed (worker exited with code 1: uncaught Error: async bug) during hang(); it is being restarted from its file (calls made meanwhile wait for it)' });
    // The worker is being restarted: this call waits in the queue, then the new worker answers it.
    expect(hot.stats.restarting).toBe(true);
    const queued = hot.call('apply', 2);
    expect(await deadline(queued, 10_000, 'the queued call')).toEqual({ version: 'v1', x: 2 });
    expect(hot.stats).toMatchObject({ restarting: false, restarts: 1, state: 'active', version: 'v1', workers: 1, callsFailed: 1, lastCrash: 'v1 (generation 1): worker exited with code 1: uncaught Error: async bug' });
  });

  it('a restart only runs the same code: the file changed since, the version stays down (CRASHED, saying why) until a reload', async () => {
    const file = sandbox.write('v1', plugin('v1'));
    const hot = sandbox.track(await HotPlugin.load<Methods>({ name: 'p', file, methods: METHODS, probation: { ms: 0, maxFailures: 0 } }));
    sandbox.write('v1', 'throw new Error("half-written deploy");'); // a deploy overwrote the file
    expect(await rejection(hot.call('apply', '__exit'))).toMatchObject({ code: 'CRASHED' });
    // Queued during the restart, rejected when it fails.
    const queued = await deadline(rejection(hot.call('apply', 1)), 10_000, 'the failed restart');
    expect(queued.message).toMatch(/^plugin p version v1 cannot take apply\(\): its worker crashed \(worker exited with code 1\) and restarting it failed: \/.*v1\.mjs changed since this version was loaded \(SHA-256 [0-9a-f]{12}… now [0-9a-f]{12}…\); reload a working version$/);
    expect(await rejection(hot.call('apply', 2))).toMatchObject({ code: 'CRASHED', message: queued.message });
    expect(hot.stats).toMatchObject({ restarting: false, restarts: 1, workers: 0 });
    const report = await hot.reload({ file: sandbox.write('v2', plugin('v2')) });
    expect(report).toMatchObject({ outcome: 'reloaded', from: 'v1', version: 'v2' });
    expect(await hot.call('apply', 3)).toEqual({ version: 'v2', x: 3 });
    expect(hot.stats.workers).toBe(1);
  });

  it('a worker out of memory (resourceLimits) is a crash of the plugin, not of the daemon: CRASHED, then a restart', async () => {
    const file = sandbox.write('v1', plugin('v1', 'export function grow() { const hog = []; for (;;) hog.push(new Array(1e5).fill(hog.length)); }'));
    const hot = sandbox.track(await HotPlugin.load<Methods & { grow(): never }>({ name: 'p', file, methods: [...METHODS, 'grow'], resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 } }));
    const error = await deadline(rejection(hot.call('grow')), 20_000, 'the out-of-memory crash');
    expect(error).toMatchObject({ code: 'CRASHED' });
    expect(error.message).toMatch(/^plugin p version v1 crashed \(worker exited with code 1: Worker terminated due to reaching memory limit: JS heap out of memory\) during grow\(\); it is being restarted from its file/i);
    expect(await deadline(hot.call('apply', 1), 10_000, 'the restarted version')).toEqual({ version: 'v1', x: 1 });
    expect(hot.stats).toMatchObject({ restarts: 1, workers: 1 });
  });

  it("a method's own error is an answer, not a crash: the caller gets it with its message and name", async () => {
    const hot = await loadV1();
    const error = await rejection(hot.call('fail', 'too big'));
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(PluginError);
    expect({ name: error.name, message: error.message }).toEqual({ name: 'RangeError', message: 'too big' });
    expect(await hot.call('apply', 1)).toEqual({ version: 'v1', x: 1 });
    expect(hot.stats).toMatchObject({ restarts: 0, callsFailed: 1, lastCrash: null });
  });
});
