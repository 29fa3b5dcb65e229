/**
 * The conformance report: one entry per check, the PROTOCOL.md section it enforces, and a
 * table for people and JSON for CI.
 */

/** The outcome of one check. */
export type CheckStatus = 'passed' | 'failed' | 'skipped';

/** One check of the conformance kit. */
export interface ConformanceCheck {
  /** Stable id, for `--only` and CI. */
  readonly id: string;
  readonly title: string;
  /** The PROTOCOL.md section(s) the check enforces, e.g. `§8`. */
  readonly section: string;
  /** True only when the check ran and passed. */
  readonly ok: boolean;
  readonly status: CheckStatus;
  /** What was seen: why it failed, why it was skipped, or what passed. */
  readonly detail: string;
  readonly ms: number;
}

/** The whole run. */
export interface ConformanceReport {
  /** The daemon's command line. */
  readonly command: readonly string[];
  readonly checks: readonly ConformanceCheck[];
  readonly passed: number;
  readonly failed: number;
  readonly skipped: number;
  /** Wall time of the run. */
  readonly ms: number;
  /** True when no check failed. */
  readonly ok: boolean;
}

/** Builds the report's totals from its checks. */
export function summarize(command: readonly string[], checks: readonly ConformanceCheck[], ms: number): ConformanceReport {
  const count = (s: CheckStatus): number => checks.filter((c) => c.status === s).length;
  const failed = count('failed');
  return { command, checks, passed: count('passed'), failed, skipped: count('skipped'), ms, ok: failed === 0 };
}

function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/** The report as a table (check, section, result, ms, detail) and the last line `conformance: N passed, N failed, N skipped`. */
export function formatReport(report: ConformanceReport, options: { readonly detailWidth?: number } = {}): string {
  const width = options.detailWidth ?? 160;
  const rows = report.checks.map((c) => [c.id, c.section, c.status === 'passed' ? 'pass' : c.status === 'failed' ? 'FAIL' : 'skip', String(c.ms), oneLine(c.detail, width)]);
  const head = ['check', 'section', 'result', 'ms', 'detail'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : i === 3 ? cell.padStart(widths[i] ?? 0) : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  const out = [line(head), line(widths.map((w, i) => (i === widths.length - 1 ? '-'.repeat(Math.min(w, 6)) : '-'.repeat(w)))), ...rows.map(line)];
  out.push(`ran in ${(report.ms / 1000).toFixed(1)} s: ${report.command.join(' ')}`);
  out.push(`conformance: ${report.passed} passed, ${report.failed} failed, ${report.skipped} skipped`);
  return `${out.join('\n')}\n`;
}
