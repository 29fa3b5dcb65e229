/** The benchmark's outputs besides JSON: a Markdown report and an SVG chart of latency over time. */
import type { CallCostRow, MemoryRow, ReloadResult, ReloadRow } from './reload.js';
import { DATA_TOTAL_MS } from './run.js';
import type { CurvePoint, OverheadRow, SystemResult, WsPoint } from './run.js';
import type { NotCommitted } from './types.js';

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
  /** WebSocket clients of the ws-chat daemon through handoffs, connections moving and draining. */
  readonly wsCurve: readonly WsPoint[];
  readonly overhead: readonly OverheadRow[];
  /** In-process hot reload (`@handoff/reload`); null when not run (or when the part failed). */
  readonly reload: ReloadResult | null;
}

const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const int = (v: number): string => Math.round(v).toLocaleString('en-US');

/** Text for a table cell: one line, no column separator. */
function cell(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|');
}

function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]): string => `| ${cells.map(cell).join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

function short(text: string, max = 160): string {
  const one = text.replace(/\s+/g, ' ').trim();
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}

const DASH = '—';

const plural = (n: number, what: string): string => `${String(n)} ${what}${n === 1 ? '' : 's'}`;

/** Why handoffs did not commit, grouped by abort code: `CODE reason; CODE (×2) reason`. */
function reasons(failed: readonly NotCommitted[]): string {
  const byCode = new Map<string, { n: number; reason: string }>();
  for (const f of failed) {
    const seen = byCode.get(f.code);
    if (seen) seen.n += 1;
    else byCode.set(f.code, { n: 1, reason: f.reason });
  }
  return [...byCode].map(([code, { n, reason }]) => `${code}${n > 1 ? ` (×${n})` : ''} ${short(reason)}`).join('; ');
}

/** `FAILED: 1/10 handoffs did not commit: CODE reason`. */
export function failedNote(failed: readonly NotCommitted[], planned: number, what = 'handoffs'): string {
  return `FAILED: ${failed.length}/${planned} ${what} did not commit: ${reasons(failed)}`;
}

function harnessNote(failure: string): string {
  return `FAILED: the harness failed: ${short(failure.split('\n')[0] ?? failure)}`;
}

const SYSTEM_COLUMNS = ['system', 'handoffs', 'requests', 'refused', 'reset', 'timeout', 'non-2xx/other', 'p50 ms', 'p99 ms', 'max ms', 'longest no-accept ms', 'per handoff, median (no handoff) ms', 'without load: per handoff, median (no handoff) ms', 'handoff p50 / max ms', 'without load: handoff p50 ms', 'throughput vs no handoff', 'lost writes', 'supervisor CPU · RSS', 'note'];

export function systemsTable(systems: readonly SystemResult[]): string {
  const rows = systems.map((s) => {
    const none = (note: string): string[] => [s.label, ...new Array<string>(SYSTEM_COLUMNS.length - 2).fill(DASH), note];
    if (s.skipped !== null) return none(`skipped: ${s.skipped}`);
    if (s.failure !== null) return none(harnessNote(s.failure));
    const e = s.errors;
    // A handoff that did not commit: the run did not do what its figures would describe.
    const valid = s.notCommitted.length === 0;
    const shown = (text: string): string => (valid ? text : DASH);
    const q = s.noLoad;
    const quiet = q !== null && q.notCommitted.length === 0 ? q : null;
    const notes: string[] = [];
    if (!valid) notes.push(failedNote(s.notCommitted, s.handoffsPlanned));
    if (q !== null && q.notCommitted.length > 0) notes.push(failedNote(q.notCommitted, s.handoffsPlanned, 'handoffs without load'));
    const quietErrors = q === null ? 0 : Object.values(q.errors).reduce((a, b) => a + b, 0);
    if (q !== null && quietErrors > 0) notes.push(`without load: ${int(quietErrors)} failed probes (${Object.entries(q.errors).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${int(n)}`).join(', ')})`);
    return [
      s.label,
      `${s.handoffsPlanned - s.notCommitted.length}/${s.handoffsPlanned}`,
      int(s.requests),
      int(e.refused),
      int(e.reset),
      int(e.timeout),
      int(e.non2xx + e.other),
      shown(ms(s.latencyMs.p50)),
      shown(ms(s.latencyMs.p99)),
      shown(ms(s.latencyMs.max)),
      shown(ms(s.longestUnservedMs)),
      shown(`${ms(s.unservedPerHandoffP50Ms)} (${ms(s.unservedNoHandoffMs)})`),
      quiet === null ? DASH : `${ms(quiet.unservedPerHandoffP50Ms)} (${ms(quiet.unservedNoHandoffMs)})`,
      shown(`${ms(s.handoffMs.p50)} / ${ms(s.handoffMs.max)}`),
      quiet === null ? DASH : ms(quiet.handoffMs.p50),
      shown(`${(100 * s.throughput.relative).toFixed(0)}%`),
      s.lostWrites === null ? 'n/a' : `${s.lostWrites} of ${int(s.acknowledgedWrites ?? 0)}`,
      s.supervisor === null ? 'none' : shown(`${s.supervisor.cpuPercent.toFixed(1)}% · ${(s.supervisor.peakRssBytes / 2 ** 20).toFixed(0)} MB`),
      notes.join('; '),
    ];
  });
  return table(SYSTEM_COLUMNS, rows);
}

/** A curve point's note: why it failed, or nothing. */
function pointNote(p: Pick<CurvePoint, 'failure' | 'notCommitted' | 'handoffsPlanned'>): string {
  if (p.failure !== null) return harnessNote(p.failure);
  return p.notCommitted.length > 0 ? failedNote(p.notCommitted, p.handoffsPlanned) : '';
}

/** Connections moved per handoff: one figure when every handoff moved as many, else each handoff's in order. */
function moved(p: Pick<CurvePoint, 'connsOffered' | 'movedPerHandoff'>): string {
  if (p.movedPerHandoff === null || p.connsOffered === null) return DASH;
  const each = p.connsOffered;
  return each.every((n) => n === each[0]) ? int(p.movedPerHandoff) : each.map(int).join(' / ');
}

/** Idle connections kept open and usable across the handoffs, of those open before. */
function kept(p: CurvePoint): string {
  if (p.failure !== null || p.idleOpened === null || p.idleKept === null) return DASH;
  const closed = p.idleClosed ?? 0;
  return `${int(p.idleKept)} of ${int(p.idleOpened)}${closed > 0 ? ` (${int(closed)} closed by the server)` : ''}`;
}

/** The connection curve: one row per point. */
export function curveTable(points: readonly CurvePoint[], x: string): string {
  return table(
    [x, 'system', 'handoff ms', 'longest no-accept ms', 'of which drain ms', 'connections moved per handoff', 'idle connections kept open', 'probe errors', 'note'],
    points.map((p) => {
      const shown = (text: string): string => (p.ok ? text : DASH);
      return [int(p.x), p.label, shown(ms(p.handoffMs)), shown(ms(p.longestUnservedMs)), p.drainMs === null ? DASH : shown(ms(p.drainMs)), shown(moved(p)), kept(p), p.failure === null ? int(p.errors) : DASH, pointNote(p)];
    }),
  );
}

/** The WebSocket curve: one row per point. */
export function wsTable(points: readonly WsPoint[], requestTimeoutMs: number): string {
  return table(
    ['clients', 'system', 'handoff ms', 'longest no-accept ms (per handoff, median; before)', 'connections moved per handoff', 'clients kept connected', 'closed by the server (close codes)', 'reconnects', 'connected at the end', 'messages answered / sent', 'message round trip p50 / p99 / max ms', 'probe errors', 'note'],
    points.map((p) => {
      const shown = (text: string): string => (p.ok ? text : DASH);
      const c = p.clients;
      const codes = c === null ? '' : Object.entries(c.closeCodes).map(([code, n]) => `${code} ×${int(n)}`).join(', ');
      return [
        int(p.x),
        p.label,
        shown(ms(p.handoffMs)),
        shown(`${ms(p.longestUnservedMs)} (${ms(p.unservedPerHandoffP50Ms)}; ${ms(p.baselineUnservedMs)})`),
        shown(moved(p)),
        c === null ? DASH : `${int(c.kept)} of ${int(c.opened)}`,
        c === null ? DASH : `${int(c.closedByServer)}${codes === '' ? '' : ` (${codes})`}`,
        c === null ? DASH : `${int(c.reconnects)}${c.reconnectFailures > 0 ? ` (${int(c.reconnectFailures)} attempts failed)` : ''}`,
        c === null ? DASH : `${int(c.connectedAtEnd)} of ${int(c.clients)}`,
        c === null ? DASH : `${int(c.messagesAnswered)} / ${int(c.messagesSent)}${c.messagesLate > 0 ? ` (${int(c.messagesLate)} after > ${String(requestTimeoutMs / 1000)} s)` : ''}`,
        c === null || c.messagesAnswered === 0 ? DASH : `${ms(c.roundTripMs.p50)} / ${ms(c.roundTripMs.p99)} / ${ms(c.roundTripMs.max)}`,
        p.failure === null ? int(p.errors) : DASH,
        pointNote(p),
      ];
    }),
  );
}

/** The data-size curve: at each size, its systems side by side. */
export function dataTable(points: readonly CurvePoint[]): string {
  return table(
    ['keys', 'system', 'committed', 'trigger to commit ms', 'added no-accept ms (per handoff − baseline)', 'refused / failed probes', 'note'],
    points.map((p) => {
      const shown = (text: string): string => (p.ok ? text : DASH);
      return [
        int(p.x),
        p.label,
        p.failure === null ? `${p.handoffsPlanned - p.notCommitted.length}/${p.handoffsPlanned}` : DASH,
        shown(ms(p.handoffMs)),
        shown(`${ms(p.addedUnservedMs)} (${ms(p.unservedPerHandoffP50Ms)} − ${ms(p.baselineUnservedMs)})`),
        p.failure === null ? `${int(p.refused)} / ${int(p.errors)}` : DASH,
        pointNote(p),
      ];
    }),
  );
}

/**
 * This project's rows and points where a handoff did not commit, one phrase each (for the
 * line on stderr); empty when every one committed. Peers keep their own error accounting.
 */
export function failedHandoffs(r: BenchResult): string[] {
  const codes = (failed: readonly NotCommitted[]): string => [...new Set(failed.map((f) => f.code))].join(', ');
  const out: string[] = [];
  for (const s of r.systems.filter((x) => x.ours)) {
    if (s.notCommitted.length > 0) out.push(`${s.label} ${s.notCommitted.length}/${s.handoffsPlanned} (${codes(s.notCommitted)})`);
    const q = s.noLoad;
    if (q !== null && q.notCommitted.length > 0) out.push(`${s.label} without load ${q.notCommitted.length}/${s.handoffsPlanned} (${codes(q.notCommitted)})`);
  }
  const curve = (name: string, unit: string, points: readonly (CurvePoint | WsPoint)[]): void => {
    for (const p of points.filter((x) => x.ours && x.notCommitted.length > 0)) out.push(`${name} ${int(p.x)} ${unit}, ${p.label} ${p.notCommitted.length}/${p.handoffsPlanned} (${codes(p.notCommitted)})`);
  };
  curve('connection curve', 'connections', r.connectionCurve);
  curve('data-size curve', 'keys', r.dataCurve);
  curve('WebSocket curve', 'clients', r.wsCurve);
  // A plugin reload that did not end with the new version serving: like a handoff that did not commit.
  for (const row of r.reload?.reloads ?? []) {
    const failed = notReloaded(row);
    if (failed > 0) out.push(`in-process reload, ${row.mode} mode ${failed}/${row.planned} (${[...new Set(row.notReloaded.map((n) => n.cause ?? n.outcome))].join(', ') || 'not requested'})`);
  }
  return out;
}

export function overheadTable(rows: readonly OverheadRow[]): string {
  return table(
    ['hello-world served by', 'requests/s (median)', 'vs bare Node', 'p50 ms', 'p99 ms', 'rounds'],
    rows.map((r) => [r.label, int(r.medianRps), `${(100 * r.relative).toFixed(1)}%`, ms(r.p50Ms), ms(r.p99Ms), r.rps.map(int).join(', ')]),
  );
}

const kib = (v: number): string => `${v > 0 ? '+' : ''}${v.toFixed(1)}`;
const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);

/** The hot-reload part's reloads that did not end with the new version serving (or were never requested). */
function notReloaded(row: ReloadRow): number {
  return row.notReloaded.length + (row.planned - row.done);
}

/** What a call costs in each mode, beside a direct call. */
export function callCostTable(rows: readonly CallCostRow[]): string {
  const direct = rows.find((c) => c.id === 'direct')?.nsPerCall ?? 0;
  return table(
    ['call', 'ns per call (median of rounds)', 'rounds, min – max ns', '× a direct call', 'calls timed'],
    rows.map((c) => [c.label, int(c.nsPerCall), `${int(c.nsMin)} – ${int(c.nsMax)}`, direct > 0 ? `${(c.nsPerCall / direct).toFixed(1)}×` : DASH, int(c.calls)]),
  );
}

/** Reload time per mode, and the calls made meanwhile. */
export function reloadTable(rows: readonly ReloadRow[]): string {
  return table(
    ['mode', 'reloaded', 'probation ms', 'reload p50 ms', 'reload p95 ms', 'max ms', 'callers', 'calls during the reloads', 'failed calls', 'note'],
    rows.map((r) => {
      const failed = notReloaded(r);
      const reloaded = r.planned - failed;
      const shown = (text: string): string => (reloaded > 0 ? text : DASH);
      const notes: string[] = [];
      if (r.notReloaded.length > 0) notes.push(`FAILED: ${r.notReloaded.length}/${r.planned} reloads did not reload: ${reasons(r.notReloaded.map((n) => ({ index: n.index, code: `${n.outcome}${n.cause === null ? '' : ` (${n.cause})`}`, reason: n.error })))}`);
      if (r.done < r.planned) notes.push(`${r.planned - r.done} not requested: the loop's deadline passed`);
      if (r.firstFailure !== null) notes.push(`first failed call: ${short(r.firstFailure)}`);
      return [r.mode, `${reloaded}/${r.planned}`, String(r.probationMs), shown(ms(r.p50Ms)), shown(ms(r.p95Ms)), shown(ms(r.maxMs)), String(r.callers), int(r.calls), int(r.callsFailed), notes.join('; ')];
    }),
  );
}

/** Memory and threads a reload leaves behind, per mode. */
export function memoryTable(rows: readonly MemoryRow[]): string {
  return table(
    ['mode', 'reloads', 'heap KiB per reload (second half)', 'RSS KiB per reload (second half)', 'heap before → halfway → after MiB', 'RSS before → halfway → after MiB', 'threads before → after', 'note'],
    rows.map((m) => {
      const p = m.probe;
      if (p === null || m.failure !== null) return [m.mode, DASH, DASH, DASH, DASH, DASH, DASH, harnessNote(m.failure ?? 'no result')];
      return [
        m.mode,
        `${int(p.reloads)} (after ${p.warmup})`,
        `${kib(m.heapKiBPerReload ?? 0)} (${kib(m.heapKiBPerReloadSecondHalf ?? 0)})`,
        `${kib(m.rssKiBPerReload ?? 0)} (${kib(m.rssKiBPerReloadSecondHalf ?? 0)})`,
        `${mib(p.heapBefore)} → ${mib(p.heapHalf)} → ${mib(p.heapAfter)}`,
        `${mib(p.rssBefore)} → ${mib(p.rssHalf)} → ${mib(p.rssAfter)}`,
        `${p.threadsBefore} → ${p.threadsAfter}`,
        '',
      ];
    }),
  );
}

/** The hot-reload section (its heading included); one line when the part did not run. */
export function reloadSection(r: ReloadResult | null, s: Readonly<Record<string, unknown>>): string {
  const heading = '## In-process hot reload (`@handoff/reload`)';
  if (r === null) return `${heading}\n\nNot measured in this run.\n`;
  const probation = [...new Set(r.reloads.map((x) => x.probationMs))].join(', ');
  const callers = r.reloads[0]?.callers ?? 0;
  return `${heading}

A plugin module replaced inside one running process, no handoff: the same small function (a string transform,
\`text.toUpperCase() + '!'\`) called directly and through a plugin in each mode, then each mode's plugin reloaded
${String(s.reloads)} times back to back, each reload a new version of its file (a different exported \`version\`).

**What a call costs.** Each figure is the median of the timed rounds within ${String(s.reloadCallMs)} ms (after a warm-up
of a tenth of it), the loop and picking the argument included; a worker call crosses to the plugin's worker thread and
back, the throughput row keeps ${String(r.inFlight)} calls in flight and divides the time by the calls answered.

${callCostTable(r.calls)}

**What a reload takes.** From \`plugin.reload()\` to its report, settled: the candidate loaded and self-tested, swapped in,
the old version drained and freed (worker mode: its worker terminated), with probation set to ${probation} ms so that
the figure is the reload's own (a daemon's default probation of 1 s would add itself to every reload). Meanwhile
${String(callers)} callers call the plugin throughout, each awaiting its answer and yielding a turn of the event loop before the
next; a failed call is one that rejected or answered wrong.

${reloadTable(r.reloads)}

**What a reload leaves behind.** Each mode in a process of its own (\`node --expose-gc\`): after a warm-up of a few
reloads, heap used and RSS after full GCs, then ${String(s.reloadMemoryReloads)} reloads (a few calls to each version), then again, and
halfway; per reload: (after − before) / reloads, in brackets over the second half alone (after − halfway) / its reloads, so
that growth that goes on (a leak; in-thread mode's modules) shows apart from a plateau reached early. Threads: the
process's OS threads (\`/proc/self/status\`). Node never evicts an ES module from its module map, so in-thread mode is
expected to keep every version it loaded; worker mode frees each version with its worker. RSS follows the allocator (a
terminated worker's pages are not all given back at once), not only what is live: read a small figure as noise.

${memoryTable(r.memory)}
`;
}

export function markdown(r: BenchResult): string {
  const s = r.settings;
  return `## Handoffs under load (${r.preset} run, ${r.startedAt})

Each system served the same app under the same load: ${String(s.connections)} keep-alive connections from autocannon,
a prober opening a fresh connection every ${String(s.probeEveryMs)} ms, and for the key-value daemon ${String(s.writers)} writers
keeping a ledger of acknowledged writes, read back after the last handoff. ${String(s.handoffs)} handoffs, ${String(s.spacingMs)} ms apart.
Latency is the keep-alive clients'; "longest no-accept" is the longest a fresh connection waited to be served over the
whole run, then the median over handoffs of each handoff's longest wait (in brackets: the longest in the same run without handoffs).
For this project's rows both are measured again "without load": the same handoffs with only the fresh-connection prober
running (no keep-alive load, no writers), with a baseline of its own. Handoff duration runs from the trigger until the new
version alone serves (this project: the supervisor's commit; PM2: the reload/restart call returning; kill and restart: the
new process answering; nginx: the old master gone), over the handoffs that committed. Throughput is against the same system
with no handoff, measured just before. Supervisor CPU is a share of one core over the handoff phase. A handoff of this
project's that did not commit makes its row FAILED (the note gives the abort codes): it shows the counts of requests,
errors and lost writes, but no latency, stall, duration, throughput or CPU figure, since the run did not do what they would
describe.

${systemsTable(r.systems)}

![latency over time](latency.svg)

## Handoff duration and stall against open connections

Idle keep-alive connections held open during the handoffs (${String(s.curveHandoffs)} per point), a fresh-connection prober running.
At each point, side by side: this project's handoff with connections moving to the new daemon (the default), the same
with \`[daemon] move_connections = false\` (the drain closes idle keep-alive connections after the drain grace, 1 s by
default), and PM2's cluster reload with the app draining on SIGINT. "Moved per handoff" is the handoff result's
\`drained.connsOffered\` (each committed handoff's, in order, when they differ). "Kept open": after the handoffs (and the
prober stopped), one more request on each idle connection, on the same connection: those answered were kept open and
usable; a connection the server closed does not count. A point where a handoff did not commit is FAILED, with no figures.

${curveTable(r.connectionCurve, 'open connections')}

## WebSocket clients across handoffs

Clients of the example WebSocket daemon (apps/ws-chat, the \`ws\` package, no data directory) held open through
${plural(Number(s.curveHandoffs), 'handoff')} per point, from a load worker of their own, with a light message load (${String(s.wsMessagesPerSecond)} messages/s over all
clients, one in flight per client at most) and a fresh-connection prober running. Side by side: connections moving (the
default) and \`move_connections = false\` (the daemon closes its clients with 1012 at the drain; a daemon without a data
directory that moves nothing is handed off by overlap, its drain after the commit, so the result has no \`drained\` and
"moved" shows —). A client the server closed reconnects after 1–2 s (no sooner than the drain grace: one that came
back sooner could land on the old daemon while it still accepts during its drain); at the end, the reconnects under
way finish before the last message. A message is waited for past the request timeout (${String(Number(s.requestTimeoutMs) / 1000)} s): a connection being
moved is read again only once the new daemon adopts it; "after > ${String(Number(s.requestTimeoutMs) / 1000)} s" counts those answered that late.
"Kept connected": clients whose original connection was still open at the end and answered one last message on it (a
client the server closed does not count, even once reconnected); "connected at the end": those that answered the last
message, reconnected ones included. "Longest no-accept" runs from the first trigger to the end; in brackets the median
over handoffs of each one's longest wait, and the longest in the warm-up with every client open and no handoff yet.

${wsTable(r.wsCurve, Number(s.requestTimeoutMs))}

## Handoff duration and stall against the key-value daemon's data size

At each size, side by side: a handoff with preload (the key-value daemon's default: the new process loads the data
read-only before it says Hello, and once the incumbent sealed replays only the log tail written since), a handoff without
preload (\`KV_PRELOAD=0\`: the new process replays the whole log after the seal, while the supervisor holds the
listener), and a kill and restart (the whole log replayed with nobody listening). ${plural(Number(s.curveHandoffs), 'handoff')} per point,
a fresh-connection prober running, nothing else. "Added no-accept" is, per handoff, the longest a fresh connection waited
from its trigger to the next (median over the handoffs) minus the longest wait before the first trigger in the same run
(in brackets: the two). Trigger to commit is the median over the handoffs that committed (kill and restart: until the new
process answers). The supervisor gives a handoff up after ${String(DATA_TOTAL_MS / 1000)} s here (\`[timeouts] total\`), so every point is
bounded in time; a point where a handoff did not commit is FAILED, with no figures.

${dataTable(r.dataCurve)}

## Data-path overhead (no handoff)

${overheadTable(r.overhead)}

${reloadSection(r.reload, s)}`;
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
    `<text x="${left}" y="18" font-size="14" font-weight="bold">Keep-alive request latency over time (log scale); shaded: handoff from trigger to commit (red: did not commit); red ticks: errors</text>`,
    `<text x="${left}" y="32" fill="#555">blue: p99 per ${String(shown[0]?.timeline?.binMs ?? 0)} ms bin, grey: max per bin, a gap: no answer in that bin</text>`,
  ];
  shown.forEach((s, i) => {
    const tl = s.timeline;
    if (tl === null) return;
    const y0 = top + i * (panel + gap) + 14;
    const failed = s.notCommitted.length > 0 ? ` — FAILED: ${s.notCommitted.length}/${s.handoffsPlanned} handoffs did not commit (red)` : '';
    out.push(`<text x="${left}" y="${y0 - 4}" font-weight="bold">${esc(s.label + failed)}</text>`);
    out.push(`<rect x="${left}" y="${y0}" width="${plotW}" height="${panel}" fill="none" stroke="#ccc"/>`);
    for (const m of s.marks) out.push(`<rect x="${x(m.from).toFixed(1)}" y="${y0}" width="${Math.max(1, x(m.to) - x(m.from)).toFixed(1)}" height="${panel}" fill="${m.ok ? '#f5c542' : '#d1242f'}" fill-opacity="0.35"/>`);
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
