/** Pure arithmetic over what the load workers saw. */
import type { RequestResult } from '@handoff/testkit';
import { BenchAbort, ERROR_KINDS } from './types.js';
import type { CannonResult, ErrorKind, HandoffTiming, NotCommitted } from './types.js';

/** The q-quantile (0..1) by nearest rank; 0 for no values. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? 0;
}

/** The largest value, 0 for none (no spread: arrays here hold 100,000s of values). */
export function max(values: readonly number[]): number {
  let m = 0;
  for (const v of values) if (v > m) m = v;
  return m;
}

export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

export function emptyErrors(): Record<ErrorKind, number> {
  return Object.fromEntries(ERROR_KINDS.map((k) => [k, 0])) as Record<ErrorKind, number>;
}

/** Errors by kind over the keep-alive clients (non-2xx from their status codes) and the prober/writers. */
export function countErrors(cannon: CannonResult, probes: readonly RequestResult[]): Record<ErrorKind, number> {
  const errors = emptyErrors();
  for (const e of cannon.errors) errors[e.kind] += 1;
  for (const s of cannon.status) if (s < 200 || s >= 300) errors.non2xx += 1;
  for (const r of probes) if (r.error !== null) errors[r.error] += 1;
  return errors;
}

/**
 * The longest time a new client could not be served, from the fresh-connection prober: a
 * probe waits from its start until its answer; a run of failed probes leaves clients
 * unserved from the first failure's start until the next successful probe is answered.
 */
export function longestUnserved(probes: readonly RequestResult[]): number {
  const sorted = probes.filter((p) => p.role === 'prober').sort((a, b) => a.startedAt - b.startedAt);
  let longest = 0;
  let failingSince: number | null = null;
  for (const p of sorted) {
    if (p.error !== null) {
      failingSince ??= p.startedAt;
      continue;
    }
    longest = Math.max(longest, p.endedAt - (failingSince ?? p.startedAt));
    failingSince = null;
  }
  const last = sorted.at(-1);
  if (failingSince !== null && last !== undefined) longest = Math.max(longest, last.endedAt - failingSince);
  return longest;
}

/**
 * {@link longestUnserved} per handoff: the probes started from one trigger to the next (the
 * last: to the end), so one outlier does not stand for every handoff.
 */
export function unservedPerHandoff(probes: readonly RequestResult[], triggers: readonly number[]): number[] {
  return triggers.map((t, i) => {
    const next = triggers[i + 1] ?? Infinity;
    return longestUnserved(probes.filter((p) => p.startedAt >= t && p.startedAt < next));
  });
}

/** {@link longestUnserved} over the probes started before `t` (a run's own baseline: before its first trigger). */
export function unservedBefore(probes: readonly RequestResult[], t: number): number {
  return longestUnserved(probes.filter((p) => p.startedAt < t));
}

/**
 * The handoffs of a run of `planned` that did not commit, with why; those never triggered
 * (the harness gave up on an earlier one) count too. Empty when all `planned` committed.
 */
export function notCommitted(handoffs: readonly HandoffTiming[], planned: number): NotCommitted[] {
  const failed: NotCommitted[] = [];
  handoffs.forEach((h, index) => {
    if (!h.ok) failed.push({ index, code: h.abort?.code ?? 'UNKNOWN', reason: h.abort?.reason ?? h.detail });
  });
  for (let index = handoffs.length; index < planned; index++) failed.push({ index, code: BenchAbort.NotTriggered, reason: 'not triggered: the harness gave up on an earlier handoff of this run' });
  return failed;
}

/** Trigger-to-commit of the handoffs that committed, ms. */
export function commitDurations(handoffs: readonly HandoffTiming[]): number[] {
  return handoffs.filter((h) => h.ok).map((h) => h.committedAt - h.triggeredAt);
}

/** Latency over time: per bin of `binMs` from `start`, the p50, p99 and max latency, and errors. */
export interface Timeline {
  readonly binMs: number;
  readonly start: number;
  readonly p50: number[];
  readonly p99: number[];
  readonly max: number[];
  readonly errors: number[];
}

export function timeline(cannon: CannonResult, probes: readonly RequestResult[], start: number, end: number, binMs: number): Timeline {
  const bins = Math.max(1, Math.ceil((end - start) / binMs));
  const latencies: number[][] = Array.from({ length: bins }, () => []);
  const errors = new Array<number>(bins).fill(0);
  const bin = (t: number): number => Math.min(bins - 1, Math.max(0, Math.floor((t - start) / binMs)));
  cannon.at.forEach((t, i) => {
    if (t < start || t > end) return;
    latencies[bin(t)]?.push(cannon.latency[i] ?? 0);
    const s = cannon.status[i] ?? 0;
    if (s < 200 || s >= 300) errors[bin(t)] = (errors[bin(t)] ?? 0) + 1;
  });
  for (const e of cannon.errors) if (e.at >= start && e.at <= end) errors[bin(e.at)] = (errors[bin(e.at)] ?? 0) + 1;
  for (const r of probes) if (r.error !== null && r.endedAt >= start && r.endedAt <= end) errors[bin(r.endedAt)] = (errors[bin(r.endedAt)] ?? 0) + 1;
  return {
    binMs,
    start,
    p50: latencies.map((l) => quantile(l, 0.5)),
    p99: latencies.map((l) => quantile(l, 0.99)),
    max: latencies.map(max),
    errors,
  };
}
