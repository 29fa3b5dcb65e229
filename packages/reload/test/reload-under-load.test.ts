/**
 * The promise of a reload, under a continuous call load: no call fails, each is answered by
 * exactly one version, and every call made after a reload's 'swapped' event (until the next
 * one) is answered by the new version — 100 reloads in a row, in worker mode.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HotPlugin } from '../src/index.js';
import type { ReloadReport } from '../src/index.js';
import { METHODS, Sandbox, deadline, plugin } from './helpers.js';
import type { Answer, Methods } from './helpers.js';

const RELOADS = 100;
const LOOPS = 3;
/** Each loop's cap on calls: the loops stop once the reloads are done, or at this. */
const MAX_CALLS_PER_LOOP = 200_000;

let sandbox: Sandbox;
afterEach(async () => {
  await sandbox.cleanup();
});

describe('reloads under load (worker mode)', () => {
  it(`${RELOADS} reloads under continuous calls: 0 failed calls, each call answered by the version active when it was made`, async () => {
    sandbox = new Sandbox();
    const hot = sandbox.track(
      await HotPlugin.load<Methods>({ name: 'load', file: sandbox.write('v0', plugin('v0')), methods: METHODS, probation: { ms: 10, maxFailures: 0 }, drainTimeoutMs: 10_000 }),
    );
    // The version every call made now must be answered by: it changes at each 'swapped' event.
    let current = 'v0';
    let done = false;
    let calls = 0;
    const failures: string[] = [];
    const mismatches: string[] = [];
    const answeredBy = new Map<string, number>();

    const loop = async (n: number): Promise<void> => {
      for (let i = 0; !done && i < MAX_CALLS_PER_LOOP; i++) {
        const expected = current;
        // Mix calls answered at once with calls still in flight across a swap.
        const pending: Promise<Answer> = i % 2 === 0 ? hot.call('apply', i) : hot.call('later', i);
        calls++;
        try {
          const answer = await pending;
          answeredBy.set(answer.version, (answeredBy.get(answer.version) ?? 0) + 1);
          if (answer.version !== expected || answer.x !== i) mismatches.push(`loop ${n} call ${i}: made while ${expected} was active, answered ${JSON.stringify(answer)}`);
        } catch (error) {
          failures.push(`loop ${n} call ${i}: ${String(error)}`);
        }
      }
    };
    const loops = Array.from({ length: LOOPS }, (_, n) => loop(n));

    const reports: ReloadReport[] = [];
    try {
      for (let r = 1; r <= RELOADS; r++) {
        const file = sandbox.write(`v${r}`, plugin(`v${r}`));
        const report = await hot.reload({
          file,
          onProgress: ({ phase }) => {
            if (phase === 'swapped') current = `v${r}`;
          },
        });
        reports.push(report);
        if (report.outcome !== 'reloaded') break;
      }
    } finally {
      done = true;
      await deadline(Promise.all(loops), 10_000, 'the call loops');
    }

    expect(reports.filter((r) => r.outcome !== 'reloaded').map((r) => r.error)).toEqual([]);
    expect(reports).toHaveLength(RELOADS);
    expect(failures).toEqual([]);
    expect(mismatches).toEqual([]);
    expect(reports.reduce((sum, r) => sum + r.cutCalls, 0)).toBe(0);
    // Every version took calls, and the counts add up: each call answered exactly once.
    expect(answeredBy.size).toBeGreaterThan(RELOADS / 2);
    expect([...answeredBy.values()].reduce((a, b) => a + b, 0)).toBe(calls);
    const stats = hot.stats;
    expect(stats).toMatchObject({ version: `v${RELOADS}`, generation: RELOADS + 1, reloads: RELOADS, failures: 0, rollbacks: 0, calls, callsFailed: 0, callsCut: 0, workers: 1, state: 'active' });
    console.log(
      `${RELOADS} reloads under ${LOOPS} call loops: ${calls} calls, 0 failed; reload ${median(reports.map((r) => r.durationMs)).toFixed(0)} ms median (probation 10 ms included), old versions drained ${reports.reduce((s, r) => s + (r.drain?.completed ?? 0), 0)} calls in flight at their swaps`,
    );
  }, 60_000);
});

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}
