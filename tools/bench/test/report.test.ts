/**
 * The report's tables mark a handoff of this project's that did not commit as FAILED, show no
 * timing figure for it, and name it for the line on stderr; peers keep their own accounting.
 * A plugin reload that did not reload is treated alike.
 */
import { describe, expect, it } from 'vitest';
import { emptyResult } from '../src/run.js';
import type { CurvePoint, SystemResult } from '../src/run.js';
import type { ReloadResult, ReloadRow } from '../src/reload.js';
import { curveTable, dataTable, failedHandoffs, memoryTable, reloadSection, reloadTable, systemsTable } from '../src/report.js';
import type { BenchResult } from '../src/report.js';
import { notCommitted } from '../src/stats.js';
import type { System } from '../src/systems.js';
import type { HandoffTiming } from '../src/types.js';

const committed: HandoffTiming = { triggeredAt: 1_000, committedAt: 1_300, ok: true, abort: null, detail: 'committed' };
const silent: HandoffTiming = { triggeredAt: 3_000, committedAt: 6_100, ok: false, abort: { code: 'HANDOFF_SUCCESSOR_SILENT', reason: 'the successor was silent | for 3000 ms\nduring preparing' }, detail: 'rolledBack' };

function system(id: string, label: string, ours: boolean): System {
  return { id, label, app: 'kv', ours, unavailable: () => null, start: () => Promise.resolve(), handoff: () => Promise.resolve(committed), supervisorPids: () => [], stop: () => Promise.resolve() };
}

function row(id: string, ours: boolean, handoffs: readonly HandoffTiming[]): SystemResult {
  return {
    ...emptyResult(system(id, id, ours), null),
    handoffs,
    handoffsPlanned: 2,
    notCommitted: handoffs.flatMap((h, index) => (h.ok ? [] : [{ index, code: h.abort?.code ?? '', reason: h.abort?.reason ?? '' }])),
    requests: 1_234,
    latencyMs: { p50: 1.5, p99: 9.5, max: 123 },
    longestUnservedMs: 456,
    unservedPerHandoffP50Ms: 111,
    unservedNoHandoffMs: 22,
    handoffMs: { p50: 300, max: 300 },
    throughput: { baselineRps: 100, rps: 50, relative: 0.5 },
    acknowledgedWrites: 77,
    lostWrites: 0,
    noLoad: ours ? { handoffs: [committed, committed], notCommitted: [], unservedPerHandoffP50Ms: 33, unservedNoHandoffMs: 4, handoffMs: { p50: 250, max: 260 }, errors: { refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 } } : null,
  };
}

function point(id: string, label: string, ours: boolean, handoffs: readonly HandoffTiming[]): CurvePoint {
  const notCommitted = handoffs.flatMap((h, index) => (h.ok ? [] : [{ index, code: h.abort?.code ?? '', reason: h.abort?.reason ?? '' }]));
  return { system: id, label, ours, x: 1_000_000, handoffs, handoffsPlanned: handoffs.length, notCommitted, handoffMs: 300, longestUnservedMs: 2_600, baselineUnservedMs: 40, unservedPerHandoffP50Ms: 2_500, unservedPerHandoffMs: [2_500], addedUnservedMs: 2_460, drainMs: 5, errors: 0, refused: 0, idleOpened: null, idleKept: null, idleClosed: null, connsOffered: null, movedPerHandoff: null, ok: notCommitted.length === 0, failure: null };
}

/** The cells of a Markdown table's line (escaped pipes stay inside their cell). */
function cells(line: string | undefined): string[] {
  return (line ?? '').split(/(?<!\\)\|/).slice(1, -1).map((c) => c.trim());
}

function bench(systems: readonly SystemResult[], dataCurve: readonly CurvePoint[] = [], reload: ReloadResult | null = null): BenchResult {
  return { version: 1, preset: 'quick', startedAt: '', durationS: 0, machine: { cpu: '', cores: 1, memoryGiB: 1, os: '', node: '', peers: {} }, settings: {}, systems, connectionCurve: [], dataCurve, wsCurve: [], overhead: [], reload };
}

function reloads(mode: ReloadRow['mode'], notReloaded: ReloadRow['notReloaded'] = []): ReloadRow {
  return { mode, probationMs: 0, planned: 3, done: 3, notReloaded, p50Ms: 2.5, p95Ms: 31, maxMs: 31, callers: 4, calls: 7_704, callsFailed: 0, firstFailure: null };
}

describe('a handoff that did not commit', () => {
  it('makes its row FAILED with the abort code and reason, and no timing figure', () => {
    const lines = systemsTable([row('handoff-kv', true, [committed, silent]), row('handoff-hello', true, [committed, committed])]).split('\n');
    const head = cells(lines[0]);
    const failed = cells(lines[2]);
    const ok = cells(lines[3]);
    expect(failed).toHaveLength(head.length);
    const at = (r: string[], column: string): string | undefined => r[head.indexOf(column)];
    expect(at(failed, 'handoffs')).toBe('1/2');
    expect(at(failed, 'note')).toBe('FAILED: 1/2 handoffs did not commit: HANDOFF_SUCCESSOR_SILENT the successor was silent \\| for 3000 ms during preparing');
    for (const column of ['p50 ms', 'p99 ms', 'max ms', 'longest no-accept ms', 'per handoff, median (no handoff) ms', 'handoff p50 / max ms', 'throughput vs no handoff']) expect(at(failed, column), column).toBe('—');
    // What happened to clients is still counted.
    expect(at(failed, 'requests')).toBe('1,234');
    expect(at(failed, 'lost writes')).toBe('0 of 77');
    // The handoffs without load all committed: their figures stand.
    expect(at(failed, 'without load: per handoff, median (no handoff) ms')).toBe('33.0 (4.00)');
    expect(at(ok, 'note')).toBe('');
    expect(at(ok, 'handoff p50 / max ms')).toBe('300 / 300');
    expect(at(ok, 'without load: handoff p50 ms')).toBe('250');
  });

  it('is named for stderr, ours only', () => {
    expect(failedHandoffs(bench([row('handoff-hello', true, [committed, committed]), row('naive-kv', false, [committed, committed])]))).toEqual([]);
    const peer = { ...row('naive-kv', false, [committed, committed]), notCommitted: [{ index: 0, code: 'X', reason: 'y' }] };
    expect(failedHandoffs(bench([row('handoff-kv', true, [committed, silent]), peer]))).toEqual(['handoff-kv 1/2 (HANDOFF_SUCCESSOR_SILENT)']);
  });

  it('makes a curve point FAILED, with no figures', () => {
    const points = [point('handoff-kv-nopreload', 'handoff, no preload', true, [committed, silent, silent]), point('handoff-kv-preload', 'handoff, preload', true, [committed, committed, committed])];
    const lines = dataTable(points).split('\n');
    expect(cells(lines[2])).toEqual(['1,000,000', 'handoff, no preload', '1/3', '—', '—', '0 / 0', 'FAILED: 2/3 handoffs did not commit: HANDOFF_SUCCESSOR_SILENT (×2) the successor was silent \\| for 3000 ms during preparing']);
    expect(cells(lines[3])).toEqual(['1,000,000', 'handoff, preload', '3/3', '300', '2460 (2500 − 40.0)', '0 / 0', '']);
    expect(cells(curveTable(points, 'open connections').split('\n')[2]).slice(2, 5)).toEqual(['—', '—', '—']);
    expect(failedHandoffs(bench([], points))).toEqual(['data-size curve 1,000,000 keys, handoff, no preload 2/3 (HANDOFF_SUCCESSOR_SILENT)']);
  });

  it('counts the handoffs never triggered after the harness gave up', () => {
    const gaveUp: HandoffTiming = { ...silent, abort: { code: 'BENCH_NO_ANSWER', reason: 'no answer' } };
    const failed = notCommitted([gaveUp], 2);
    expect(failed.map((f) => [f.index, f.code])).toEqual([[0, 'BENCH_NO_ANSWER'], [1, 'BENCH_NOT_TRIGGERED']]);
    const note = cells(systemsTable([{ ...row('handoff-hello', true, [gaveUp]), notCommitted: failed }]).split('\n')[2]).at(-1);
    expect(note).toMatch(/^FAILED: 2\/2 handoffs did not commit: BENCH_NO_ANSWER no answer; BENCH_NOT_TRIGGERED not triggered/);
  });
});

describe('the hot-reload section', () => {
  const probe = { mode: 'worker' as const, reloads: 20, warmup: 5, seconds: 2, half: 10, heapBefore: 4 * 2 ** 20, heapHalf: 4 * 2 ** 20, heapAfter: 4 * 2 ** 20 + 20 * 1024, rssBefore: 60 * 2 ** 20, rssHalf: 61 * 2 ** 20, rssAfter: 60 * 2 ** 20 - 40 * 1024, threadsBefore: 12, threadsAfter: 12, workersAlive: 1 };

  it('shows each mode\'s reload time, probation and calls, and a reload that did not reload as FAILED with its cause', () => {
    const rolledBack = { index: 1, outcome: 'rolledBack', cause: 'probation', error: 'plugin p: 1 failed call | in probation; rolled back to v0' };
    const lines = reloadTable([reloads('worker'), { ...reloads('inThread', [rolledBack]), callsFailed: 2, firstFailure: 'CUT\nat the deadline' }]).split('\n');
    const head = cells(lines[0]);
    const at = (r: string[], column: string): string | undefined => r[head.indexOf(column)];
    const ok = cells(lines[2]);
    const failed = cells(lines[3]);
    expect(ok).toEqual(['worker', '3/3', '0', '2.50', '31.0', '31.0', '4', '7,704', '0', '']);
    expect(at(failed, 'reloaded')).toBe('2/3');
    expect(at(failed, 'failed calls')).toBe('2');
    expect(at(failed, 'note')).toBe('FAILED: 1/3 reloads did not reload: rolledBack (probation) plugin p: 1 failed call \\| in probation; rolled back to v0; first failed call: CUT at the deadline');
  });

  it('names a reload that did not reload for stderr', () => {
    expect(failedHandoffs(bench([], [], { inFlight: 64, calls: [], reloads: [reloads('worker')], memory: [] }))).toEqual([]);
    const short = { ...reloads('worker', [{ index: 0, outcome: 'failed', cause: 'load', error: 'threw' }]), done: 2 };
    expect(failedHandoffs(bench([], [], { inFlight: 64, calls: [], reloads: [short], memory: [] }))).toEqual(['in-process reload, worker mode 2/3 (load)']);
  });

  it('shows memory per reload with its sign, and a probe that failed as FAILED', () => {
    const lines = memoryTable([{ mode: 'worker', probe, heapKiBPerReload: 1, rssKiBPerReload: -2, heapKiBPerReloadSecondHalf: 2, rssKiBPerReloadSecondHalf: 0, failure: null }, { mode: 'inThread', probe: null, heapKiBPerReload: null, rssKiBPerReload: null, heapKiBPerReloadSecondHalf: null, rssKiBPerReloadSecondHalf: null, failure: 'the memory probe exited with 1: boom' }]).split('\n');
    expect(cells(lines[2])).toEqual(['worker', '20 (after 5)', '+1.0 (+2.0)', '-2.0 (0.0)', '4.0 → 4.0 → 4.0', '60.0 → 61.0 → 60.0', '12 → 12', '']);
    expect(cells(lines[3])).toEqual(['inThread', '—', '—', '—', '—', '—', '—', 'FAILED: the harness failed: the memory probe exited with 1: boom']);
  });

  it('says when the part did not run', () => {
    expect(reloadSection(null, {})).toBe('## In-process hot reload (`@handoff/reload`)\n\nNot measured in this run.\n');
  });
});
