/** The benchmark's outputs besides JSON: a Markdown report and an SVG chart of latency over time. */
import type { CurvePoint, OverheadRow, SystemResult } from './run.js';

export interface Machine {
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly os: string;
  readonly node: string;
  readonly peers: Readonly<Record<string, string>>;
}

export interface BenchResult {
  readonly version: 1;
  readonly preset: 'full' | 'quick';
  readonly startedAt: string;
  readonly durationS: number;
  readonly machine: Machine;
  readonly settings: Readonly<Record<string, unknown>>;
  readonly systems: readonly SystemResult[];
  readonly connectionCurve: readonly CurvePoint[];
  readonly dataCurve: readonly CurvePoint[];
  readonly overhead: readonly OverheadRow[];
}

const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const int = (v: number): string => Math.round(v).toLocaleString('en-US');

function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

export function systemsTable(systems: readonly SystemResult[]): string {
  const rows = systems.map((s) => {
    if (s.skipped !== null) return [s.label, ...new Array<string>(15).fill('—'), `skipped: ${s.skipped}`];
    const e = s.errors;
    return [
      s.label,
      `${s.handoffs.filter((h) => h.ok).length}/${s.handoffs.length}`,
      int(s.requests),
      int(e.refused),
      int(e.reset),
      int(e.timeout),
      int(e.non2xx + e.other),
      ms(s.latencyMs.p50),
      ms(s.latencyMs.p99),
      ms(s.latencyMs.max),
      ms(s.longestUnservedMs),
      `${ms(s.unservedPerHandoffP50Ms)} (${ms(s.unservedNoHandoffMs)})`,
      `${ms(s.handoffMs.p50)} / ${ms(s.handoffMs.max)}`,
      `${(100 * s.throughput.relative).toFixed(0)}%`,
      s.lostWrites === null ? 'n/a' : `${s.lostWrites} of ${int(s.acknowledgedWrites ?? 0)}`,
      s.supervisor === null ? 'none' : `${s.supervisor.cpuPercent.toFixed(1)}% · ${(s.supervisor.peakRssBytes / 2 ** 20).toFixed(0)} MB`,
      s.failure ?? '',
    ];
  });
  return table(
    ['system', 'handoffs', 'requests', 'refused', 'reset', 'timeout', 'non-2xx/other', 'p50 ms', 'p99 ms', 'max ms', 'longest no-accept ms', 'per handoff, median (no handoff) ms', 'handoff p50 / max ms', 'throughput vs no handoff', 'lost writes', 'supervisor CPU · RSS', 'note'],
    rows,
  );
}

export function curveTable(points: readonly CurvePoint[], x: string, labels: Readonly<Record<string, string>>): string {
  return table(
    [x, 'system', 'handoff ms', 'longest no-accept ms', 'of which drain ms', 'probe errors'],
    points.map((p) => [int(p.x), labels[p.system] ?? p.system, ms(p.handoffMs), ms(p.longestUnservedMs), p.drainMs === null ? '—' : ms(p.drainMs), int(p.errors)]),
  );
}

export function overheadTable(rows: readonly OverheadRow[]): string {
  return table(
    ['hello-world served by', 'requests/s (median)', 'vs bare Node', 'p50 ms', 'p99 ms', 'rounds'],
    rows.map((r) => [r.label, int(r.medianRps), `${(100 * r.relative).toFixed(1)}%`, ms(r.p50Ms), ms(r.p99Ms), r.rps.map(int).join(', ')]),
  );
}

const CURVE_LABELS: Readonly<Record<string, string>> = {
  'handoff-hello': 'handoff',
  'pm2-cluster-drain-hello': 'PM2 cluster reload, drain',
  'handoff-kv': 'handoff (key-value)',
  'naive-kv': 'kill and restart (key-value)',
};

export function markdown(r: BenchResult): string {
  const s = r.settings;
  return `## Handoffs under load (${r.preset} run, ${r.startedAt})

Each system served the same app under the same load: ${String(s.connections)} keep-alive connections from autocannon,
a prober opening a fresh connection every ${String(s.probeEveryMs)} ms, and for the key-value daemon ${String(s.writers)} writers
keeping a ledger of acknowledged writes, read back after the last handoff. ${String(s.handoffs)} handoffs, ${String(s.spacingMs)} ms apart.
Latency is the keep-alive clients'; "longest no-accept" is the longest a fresh connection waited to be served over the
whole run, then the median over handoffs of each handoff's longest wait (in brackets: the longest in the same run without handoffs).
Handoff duration runs from the trigger until the new version alone serves (this project: the supervisor's commit; PM2: the
reload/restart call returning; kill and restart: the new process answering; nginx: the old master gone). Throughput is
against the same system with no handoff, measured just before. Supervisor CPU is a share of one core over the handoff phase.

${systemsTable(r.systems)}

![latency over time](latency.svg)

## Handoff duration and stall against open connections

Idle keep-alive connections held open during the handoffs (${String(s.curveHandoffs)} per point), a fresh-connection prober running.

${curveTable(r.connectionCurve, 'open connections', CURVE_LABELS)}

## Handoff duration and stall against the key-value daemon's data size

The new process replays the log before it serves; a kill and restart pays the same replay with nobody listening.

${curveTable(r.dataCurve, 'keys', CURVE_LABELS)}

## Data-path overhead (no handoff)

${overheadTable(r.overhead)}
`;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * One panel per system: p99 and max latency per bin on a log scale, errors as red ticks,
 * each handoff's window (trigger to commit) shaded.
 */
export function svg(systems: readonly SystemResult[]): string {
  const shown = systems.filter((s) => s.timeline !== null);
  const width = 960;
  const left = 60;
  const right = 20;
  const panel = 110;
  const gap = 34;
  const top = 40;
  const height = top + shown.length * (panel + gap) + 20;
  const plotW = width - left - right;
  const maxT = Math.max(1, ...shown.map((s) => (s.timeline?.max.length ?? 0) * (s.timeline?.binMs ?? 1)));
  const yMax = Math.max(10, ...shown.flatMap((s) => s.timeline?.max ?? []));
  const decades = Math.ceil(Math.log10(yMax)) + 1; // from 0.1 ms
  const y = (v: number, y0: number): number => y0 + panel - (Math.log10(Math.max(v, 0.1)) + 1) / decades * panel;
  const x = (t: number): number => left + (t / maxT) * plotW;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${left}" y="18" font-size="14" font-weight="bold">Keep-alive request latency over time (log scale); shaded: handoff from trigger to commit; red: errors</text>`,
    `<text x="${left}" y="32" fill="#555">blue: p99 per ${String(shown[0]?.timeline?.binMs ?? 0)} ms bin, grey: max per bin, a gap: no answer in that bin</text>`,
  ];
  shown.forEach((s, i) => {
    const tl = s.timeline;
    if (tl === null) return;
    const y0 = top + i * (panel + gap) + 14;
    out.push(`<text x="${left}" y="${y0 - 4}" font-weight="bold">${esc(s.label)}</text>`);
    out.push(`<rect x="${left}" y="${y0}" width="${plotW}" height="${panel}" fill="none" stroke="#ccc"/>`);
    for (const m of s.marks) out.push(`<rect x="${x(m.from).toFixed(1)}" y="${y0}" width="${Math.max(1, x(m.to) - x(m.from)).toFixed(1)}" height="${panel}" fill="#f5c542" fill-opacity="0.35"/>`);
    for (let d = 0; d < decades; d++) {
      const v = 10 ** (d - 1);
      const yy = y(v, y0);
      out.push(`<line x1="${left}" x2="${left + plotW}" y1="${yy.toFixed(1)}" y2="${yy.toFixed(1)}" stroke="#eee"/>`);
      out.push(`<text x="${left - 4}" y="${(yy + 3).toFixed(1)}" text-anchor="end" fill="#555">${v < 1 ? v.toFixed(1) : String(v)} ms</text>`);
    }
    // A bin with no answer at all (0) breaks the line: a gap is an outage, not a fast answer.
    const path = (values: readonly number[]): string =>
      values.map((v, b) => (v === 0 ? '' : `${b === 0 || values[b - 1] === 0 ? 'M' : 'L'}${x((b + 0.5) * tl.binMs).toFixed(1)},${y(v, y0).toFixed(1)}`)).join('');
    out.push(`<path d="${path(tl.max)}" fill="none" stroke="#999" stroke-width="1"/>`);
    out.push(`<path d="${path(tl.p99)}" fill="none" stroke="#1f6feb" stroke-width="1.5"/>`);
    tl.errors.forEach((n, b) => {
      if (n > 0) out.push(`<line x1="${x((b + 0.5) * tl.binMs).toFixed(1)}" x2="${x((b + 0.5) * tl.binMs).toFixed(1)}" y1="${y0 + panel}" y2="${y0 + panel - Math.min(panel, 6 + 4 * Math.log2(n))}" stroke="#d1242f" stroke-width="2"><title>${n} errors</title></line>`);
    });
    for (let t = 0; t <= maxT; t += 1000) out.push(`<text x="${x(t).toFixed(1)}" y="${y0 + panel + 12}" text-anchor="middle" fill="#555">${t / 1000}s</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
