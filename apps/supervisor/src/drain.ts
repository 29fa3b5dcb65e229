/**
 * What a draining incumbent still waits for, in words (PROTOCOL.md section 6, "Long-lived
 * work"): for handoffctl's drain lines and status, the supervisor's log and systemd's status
 * line; and the drain timeout an operator gives handoffctl.
 */
import type { DrainProgressInfo } from '@handoff/supervisor';

/** How often a repeated drain line is shown when what the drain waits for has not changed. */
export const DRAIN_REPEAT_MS = 10_000;

/** A drain progress as it arrives in an answer line or a status, or null when it is not one. */
export function asDrainProgress(value: unknown): DrainProgressInfo | null {
  const p = value as Partial<Record<keyof DrainProgressInfo, unknown>> | null;
  if (typeof p !== 'object' || p === null) return null;
  const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;
  if (!isCount(p.pending) || !isCount(p.oldestMs) || !isCount(p.leftMs) || typeof p.oldest !== 'string') return null;
  if (!Array.isArray(p.kinds) || !Array.isArray(p.counts) || !p.kinds.every((k) => typeof k === 'string') || !p.counts.every(isCount)) return null;
  return { pending: p.pending, kinds: p.kinds, counts: p.counts, oldest: p.oldest, oldestMs: p.oldestMs, leftMs: p.leftMs };
}

/** Milliseconds in each unit a duration may be written in. */
const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/**
 * A drain timeout as an operator writes it — `45s`, `2m`, `1500ms`, `1.5s`, or plain
 * milliseconds — in ms; null unless it is a whole number of milliseconds from 1 to
 * `maxMs`.
 */
export function parseDuration(text: string, maxMs = 86_400_000): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) return null;
  const exact = Number(m[1]) * (UNIT_MS[m[2] ?? 'ms'] ?? 1);
  // (1.001 s is 1000.9999999999999 in floating point.)
  const ms = Math.round(exact);
  return Math.abs(exact - ms) < 1e-6 && ms >= 1 && ms <= maxMs ? ms : null;
}

/** A duration for a person: milliseconds under a second, whole seconds above. */
function took(ms: number): string {
  return ms < 1_000 ? `${Math.round(ms)} ms` : `${Math.round(ms / 1_000)} s`;
}

/** `count kind`, the kind in the plural (an `s` appended unless it ends in one) when count is not 1. */
function counted(count: number, kind: string): string {
  const word = kind === '' ? 'item' : kind;
  return `${count} ${count === 1 || word.endsWith('s') ? word : `${word}s`}`;
}

/** What the drain waits for, without the times: it changes only when the pending work does. */
export function drainWaitsFor(progress: DrainProgressInfo): string {
  if (progress.pending === 0) return 'nothing pending';
  const parts = progress.kinds.map((kind, i) => counted(progress.counts[i] ?? 0, kind));
  // Kinds beyond the 32 a message holds are counted in `pending` only.
  const listed = progress.counts.reduce((sum, n) => sum + n, 0);
  if (listed < progress.pending) parts.push(parts.length === 0 ? counted(progress.pending, 'item') : `${progress.pending - listed} more`);
  return `waiting for ${parts.join(', ')}${progress.oldest === '' ? '' : ` — oldest ${progress.oldest}`}`;
}

/**
 * A drain progress in words: `waiting for 2 jobs, 1 connection — oldest job 17: export (95 s) — 45 s left`.
 * The oldest item is left out when the daemon did not describe it.
 */
export function describeDrain(progress: DrainProgressInfo): string {
  if (progress.pending === 0) return `nothing pending — ${took(progress.leftMs)} left`;
  const oldest = progress.oldest === '' ? '' : ` (${took(progress.oldestMs)})`;
  return `${drainWaitsFor(progress)}${oldest} — ${took(progress.leftMs)} left`;
}

/**
 * Decides which drain progresses to show in a stream (a terminal, a log): one whose pending
 * work differs from the last shown, or the same again once `repeatMs` passed since it was.
 * Returns a function that answers true for each progress to show.
 */
export function drainThrottle(repeatMs = DRAIN_REPEAT_MS, now: () => number = Date.now): (progress: DrainProgressInfo) => boolean {
  let last: { readonly what: string; readonly at: number } | null = null;
  return (progress) => {
    const what = drainWaitsFor(progress);
    const at = now();
    if (last !== null && last.what === what && at - last.at < repeatMs) return false;
    last = { what, at };
    return true;
  };
}
