/**
 * The runs: each system under the same load with the same number of handoffs at the same
 * spacing; the scale curves (open connections, data size, WebSocket clients); the data-path
 * overhead.
 */
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { verifyLedger, waitUntil } from '@handoff/testkit';
import type { RequestResult } from '@handoff/testkit';
import { answers, freePort, ProcSampler, sleep } from './proc.js';
import { commitDurations, countErrors, emptyErrors, longestUnserved, max, median, notCommitted, quantile, timeline, unservedBefore, unservedPerHandoff } from './stats.js';
import type { Timeline } from './stats.js';
import { HandoffSystem, NaiveRestart, Pm2System } from './systems.js';
import type { System } from './systems.js';
import type { CannonResult, ErrorKind, HandoffTiming, LoadConfig, NotCommitted, ProbeResult, WorkerMessage, WsResult } from './types.js';

const WORKER = fileURLToPath(new URL('./load-worker.js', import.meta.url));

/** How much load, how many handoffs, how far apart. */
export interface Preset {
  readonly connections: number;
  readonly warmupMs: number;
  readonly handoffs: number;
  readonly spacingMs: number;
  readonly tailMs: number;
  readonly probeEveryMs: number;
  readonly writers: number;
  /** A request unanswered this long counts as a timeout (and ends the wait for it). */
  readonly requestTimeoutMs: number;
  readonly binMs: number;
  readonly curveConnections: readonly number[];
  readonly curveKeys: readonly number[];
  readonly curveHandoffs: number;
  /** The WebSocket curve: clients of the ws-chat daemon per point (with `curveHandoffs` handoffs each). */
  readonly curveWsClients: readonly number[];
  /** Its light message load: messages per second over all clients (one in flight per client at most). */
  readonly wsMessagesPerSecond: number;
  readonly overheadRounds: number;
  readonly overheadMs: number;
  /** In-process hot reload: the time budget of each per-call measurement, ms. */
  readonly reloadCallMs: number;
  /** Reloads timed per mode, with callers running. */
  readonly reloads: number;
  /** Reloads per mode in the memory probe (after its warm-up). */
  readonly reloadMemoryReloads: number;
}

export const FULL: Preset = {
  connections: 32,
  warmupMs: 1_000,
  handoffs: 10,
  spacingMs: 1_500,
  tailMs: 1_000,
  probeEveryMs: 5,
  writers: 2,
  requestTimeoutMs: 5_000,
  binMs: 100,
  curveConnections: [100, 500, 1_000, 2_000, 5_000],
  curveKeys: [10_000, 100_000, 1_000_000],
  curveHandoffs: 3,
  curveWsClients: [100, 1_000, 5_000],
  wsMessagesPerSecond: 100,
  overheadRounds: 3,
  overheadMs: 5_000,
  reloadCallMs: 2_000,
  reloads: 50,
  reloadMemoryReloads: 200,
};

export const QUICK: Preset = {
  connections: 16,
  warmupMs: 250,
  handoffs: 1,
  spacingMs: 500,
  tailMs: 250,
  probeEveryMs: 5,
  writers: 2,
  requestTimeoutMs: 2_000,
  binMs: 50,
  // A smoke run checks the harness, not the curve: one small point of each.
  curveConnections: [100],
  curveKeys: [10_000],
  curveHandoffs: 1,
  curveWsClients: [100],
  wsMessagesPerSecond: 100,
  overheadRounds: 1,
  overheadMs: 1_000,
  reloadCallMs: 300,
  reloads: 5,
  reloadMemoryReloads: 20,
};

/**
 * This project's rows only: the same handoffs with only the fresh-connection prober running
 * (no saturating keep-alive load, no writers), and a baseline of that with no handoff.
 */
export interface NoLoadRun {
  readonly handoffs: readonly HandoffTiming[];
  /** Those that did not commit (or were never triggered), with the abort code and reason. */
  readonly notCommitted: readonly NotCommitted[];
  readonly unservedPerHandoffP50Ms: number;
  readonly unservedNoHandoffMs: number;
  /** Trigger to commit, over the handoffs that committed. */
  readonly handoffMs: { readonly p50: number; readonly max: number };
  /** The prober's errors, with handoffs. */
  readonly errors: Record<ErrorKind, number>;
}

/** One system's row. */
export interface SystemResult {
  readonly id: string;
  readonly label: string;
  readonly app: string;
  /** This project's row: a handoff that did not commit fails the run. */
  readonly ours: boolean;
  readonly skipped: string | null;
  /** The handoffs under load (each with `ok` and, when it did not commit, its `abort`). */
  readonly handoffs: readonly HandoffTiming[];
  readonly handoffsPlanned: number;
  /** The handoffs under load that did not commit (or were never triggered), with the abort code and reason. */
  readonly notCommitted: readonly NotCommitted[];
  readonly requests: number;
  readonly errors: Record<ErrorKind, number>;
  readonly latencyMs: { readonly p50: number; readonly p99: number; readonly max: number };
  readonly longestUnservedMs: number;
  /** The median over handoffs of each one's longest wait; the longest wait in the baseline run (no handoff). */
  readonly unservedPerHandoffP50Ms: number;
  readonly unservedNoHandoffMs: number;
  /** Trigger to commit, over the handoffs that committed. */
  readonly handoffMs: { readonly p50: number; readonly max: number };
  readonly throughput: { readonly baselineRps: number; readonly rps: number; readonly relative: number };
  readonly acknowledgedWrites: number | null;
  readonly lostWrites: number | null;
  readonly supervisor: { readonly cpuPercent: number; readonly cpuSeconds: number; readonly peakRssBytes: number } | null;
  readonly timeline: Timeline | null;
  /** Handoff windows relative to the timeline's start, ms; `ok`: it committed. */
  readonly marks: readonly { readonly from: number; readonly to: number; readonly ok: boolean }[];
  /** This project's rows: the same measures without the saturating load. */
  readonly noLoad: NoLoadRun | null;
  /** The harness failed (the system would not start, or a run threw): nothing measured is valid. */
  readonly failure: string | null;
}

type LoadSpec = Omit<LoadConfig, 'maxDurationMs' | 'requestTimeoutMs'>;
type LoadResult = CannonResult | ProbeResult | WsResult;

/** Forks the load workers, waits until all run, runs `body`, stops them and collects their results. */
async function underLoad<T>(p: Preset, specs: readonly LoadSpec[], body: () => Promise<T>, boundMs = 600_000): Promise<{ results: LoadResult[]; value: T }> {
  const children: ChildProcess[] = [];
  try {
    const results = specs.map((spec) => {
      const child = fork(WORKER, [JSON.stringify({ ...spec, requestTimeoutMs: p.requestTimeoutMs, maxDurationMs: boundMs })], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      children.push(child);
      let ready: () => void = () => undefined;
      const isReady = new Promise<void>((resolve) => (ready = resolve));
      const result = new Promise<LoadResult>((resolve, reject) => {
        child.on('message', (m: WorkerMessage) => {
          if (m.type === 'ready') ready();
          else resolve(m.result);
        });
        // 'close' comes after every message was delivered ('exit' may come before).
        child.once('close', (code) => {
          reject(new Error(`a ${spec.kind} load worker exited (${String(code)}) before reporting`));
        });
      });
      // Surface an early exit while waiting for readiness too.
      result.catch(() => undefined);
      return { isReady: Promise.race([isReady, result.then(() => undefined)]), result };
    });
    await Promise.all(results.map((r) => r.isReady));
    const value = await body();
    for (const child of children) child.send({ type: 'stop' });
    return { results: await Promise.all(results.map((r) => r.result)), value };
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  }
}

function cannonOf(results: readonly LoadResult[]): CannonResult {
  const c = results.find((r): r is CannonResult => r.kind === 'cannon');
  if (!c) throw new Error('no keep-alive load result');
  return c;
}

function probeOf(results: readonly LoadResult[]): ProbeResult {
  const p = results.find((r): r is ProbeResult => r.kind === 'probe');
  if (!p) throw new Error('no prober result');
  return p;
}

function wsOf(results: readonly LoadResult[]): WsResult {
  const w = results.find((r): r is WsResult => r.kind === 'ws');
  if (!w) throw new Error('no WebSocket clients result');
  return w;
}

/**
 * Connections the old daemon offered (moved) per handoff, from each committed handoff's result
 * (`drained.connsOffered`); null for a peer, or when no result said.
 */
function connsOffered(system: System, handoffs: readonly HandoffTiming[]): number[] | null {
  if (!system.ours) return null;
  const offered = handoffs.filter((h) => h.ok).map((h) => h.drained?.connsOffered);
  return offered.length > 0 && offered.every((n): n is number => n !== undefined) ? offered : null;
}

/** 2xx answers per second, after the first `skipMs` (connections opening, code warming up). */
function okRps(c: CannonResult, skipMs = 0): number {
  const from = c.startedAt + skipMs;
  const ok = c.status.filter((s, i) => s >= 200 && s < 300 && (c.at[i] ?? 0) >= from).length;
  return ok / Math.max((c.endedAt - from) / 1000, 0.001);
}

/**
 * Triggers `count` handoffs, the i-th at `warmup + i * spacing` (or right after the previous
 * one). Stops early when the harness gave one up (no answer from the supervisor): the rest
 * count as not triggered.
 */
async function handoffsOnSchedule(system: System, p: Preset, count: number): Promise<HandoffTiming[]> {
  const start = Date.now();
  const timings: HandoffTiming[] = [];
  for (let i = 0; i < count; i++) {
    const due = start + p.warmupMs + i * p.spacingMs;
    if (Date.now() < due) await sleep(due - Date.now());
    const timing = await system.handoff();
    timings.push(timing);
    if (timing.abort?.code.startsWith('BENCH_') === true) break;
  }
  // A run with no handoff (the baseline) lasts as long as a run with `p.handoffs` would.
  const end = count === 0 ? start + p.warmupMs + p.handoffs * p.spacingMs + p.tailMs : Date.now() + p.tailMs;
  if (Date.now() < end) await sleep(end - Date.now());
  return timings;
}

/** A row with nothing measured: the base of every row, and what a skipped or failed system shows. */
export function emptyResult(system: System, skipped: string | null, failure: string | null = null): SystemResult {
  return {
    id: system.id,
    label: system.label,
    app: system.app,
    ours: system.ours,
    skipped,
    handoffs: [],
    handoffsPlanned: 0,
    notCommitted: [],
    requests: 0,
    errors: { refused: 0, reset: 0, timeout: 0, non2xx: 0, other: 0 },
    latencyMs: { p50: 0, p99: 0, max: 0 },
    longestUnservedMs: 0,
    unservedPerHandoffP50Ms: 0,
    unservedNoHandoffMs: 0,
    handoffMs: { p50: 0, max: 0 },
    throughput: { baselineRps: 0, rps: 0, relative: 0 },
    acknowledgedWrites: null,
    lostWrites: null,
    supervisor: null,
    timeline: null,
    marks: [],
    noLoad: null,
    failure,
  };
}

/** The prober's errors by kind. */
function probeErrors(probes: readonly RequestResult[]): Record<ErrorKind, number> {
  const errors = emptyErrors();
  for (const r of probes) if (r.error !== null) errors[r.error] += 1;
  return errors;
}

/** This project's rows: a baseline and `p.handoffs` handoffs with only the fresh-connection prober. */
async function noLoadRun(system: System, port: number, p: Preset, log: (line: string) => void): Promise<NoLoadRun> {
  const prober: LoadSpec[] = [{ kind: 'probe', port, connections: 0, probeEveryMs: p.probeEveryMs, writers: 0, idleConnections: 0 }];
  log(`  without the saturating load: a prober every ${p.probeEveryMs} ms only, no handoff`);
  const baseline = probeOf((await underLoad(p, prober, () => handoffsOnSchedule(system, p, 0))).results);
  log(`  the same with ${p.handoffs} handoffs`);
  const { results, value: handoffs } = await underLoad(p, prober, () => handoffsOnSchedule(system, p, p.handoffs));
  const probe = probeOf(results);
  const durations = commitDurations(handoffs);
  return {
    handoffs,
    notCommitted: notCommitted(handoffs, p.handoffs),
    unservedPerHandoffP50Ms: median(unservedPerHandoff(probe.results, handoffs.map((h) => h.triggeredAt))),
    unservedNoHandoffMs: longestUnserved(baseline.results),
    handoffMs: { p50: median(durations), max: max(durations) },
    errors: probeErrors(probe.results),
  };
}

/** One system: a baseline with no handoff, then the same load with `p.handoffs` handoffs. */
export async function runSystem(system: System, p: Preset, log: (line: string) => void): Promise<SystemResult> {
  const why = system.unavailable();
  if (why !== null) return emptyResult(system, why);
  const port = await freePort();
  const stateful = system.app === 'kv';
  try {
    await system.start(port);
    const load: LoadSpec[] = [
      { kind: 'cannon', port, connections: p.connections, probeEveryMs: 0, writers: 0, idleConnections: 0 },
      { kind: 'probe', port, connections: 0, probeEveryMs: p.probeEveryMs, writers: stateful ? p.writers : 0, idleConnections: 0 },
    ];
    const what = `${p.connections} keep-alive connections + a prober every ${p.probeEveryMs} ms${stateful ? ` + ${p.writers} writers` : ''}`;
    log(`  baseline: ${what}, no handoff`);
    const baseline = (await underLoad(p, load, () => handoffsOnSchedule(system, p, 0))).results;
    const base = cannonOf(baseline);
    log(`  the same with ${p.handoffs} handoffs, ${p.spacingMs} ms apart`);
    const sampler = new ProcSampler(() => system.supervisorPids()).start();
    const { results, value: handoffs } = await underLoad(p, load, () => handoffsOnSchedule(system, p, p.handoffs));
    const supervisor = sampler.stop();
    const cannon = cannonOf(results);
    const probe = probeOf(results);
    // A restart (PM2's fork mode, say) may still be starting the app when its call returned: read back once it answers.
    if (stateful) await waitUntil(`${system.label} to answer before reading the ledger back`, () => answers(port), 30_000);
    const lost = stateful ? await verifyLedger(port, new Map(probe.ledger)) : null;
    const durations = commitDurations(handoffs);
    const rps = okRps(cannon, p.warmupMs);
    const baselineRps = okRps(base, p.warmupMs);
    const noLoad = system.ours ? await noLoadRun(system, port, p, log) : null;
    return {
      ...emptyResult(system, null),
      handoffs,
      handoffsPlanned: p.handoffs,
      notCommitted: notCommitted(handoffs, p.handoffs),
      requests: cannon.at.length + cannon.errors.length + probe.results.length,
      errors: countErrors(cannon, probe.results),
      latencyMs: { p50: quantile(cannon.latency, 0.5), p99: quantile(cannon.latency, 0.99), max: max(cannon.latency) },
      longestUnservedMs: longestUnserved(probe.results),
      unservedPerHandoffP50Ms: median(unservedPerHandoff(probe.results, handoffs.map((h) => h.triggeredAt))),
      unservedNoHandoffMs: longestUnserved(probeOf(baseline).results),
      handoffMs: { p50: median(durations), max: max(durations) },
      throughput: { baselineRps, rps, relative: baselineRps > 0 ? rps / baselineRps : 0 },
      acknowledgedWrites: stateful ? probe.ledger.length : null,
      lostWrites: lost === null ? null : lost.length,
      supervisor,
      timeline: timeline(cannon, probe.results, cannon.startedAt, cannon.endedAt, p.binMs),
      marks: handoffs.map((h) => ({ from: h.triggeredAt - cannon.startedAt, to: h.committedAt - cannon.startedAt, ok: h.ok })),
      noLoad,
    };
  } finally {
    await system.stop();
  }
}

/** A point of a scale curve. */
export interface CurvePoint {
  /** The system's id, and its label in the curve's table. */
  readonly system: string;
  readonly label: string;
  /** This project's: a handoff that did not commit fails the run. */
  readonly ours: boolean;
  readonly x: number;
  readonly handoffs: readonly HandoffTiming[];
  readonly handoffsPlanned: number;
  /** Those that did not commit (or were never triggered), with the abort code and reason. */
  readonly notCommitted: readonly NotCommitted[];
  /** Trigger to commit, median over the handoffs that committed. */
  readonly handoffMs: number;
  /** The longest a fresh connection waited over the whole run. */
  readonly longestUnservedMs: number;
  /** The same before the first trigger: this run's own baseline. */
  readonly baselineUnservedMs: number;
  /** Per handoff, the longest wait from its trigger to the next (the last: to the end); the median over handoffs. */
  readonly unservedPerHandoffP50Ms: number;
  /** The same per handoff, in order. */
  readonly unservedPerHandoffMs: readonly number[];
  /** What the handoffs added: the per-handoff median minus the baseline (at least 0). */
  readonly addedUnservedMs: number;
  readonly drainMs: number | null;
  /** Failed probes (of which refused). */
  readonly errors: number;
  readonly refused: number;
  /**
   * The connection curve (null elsewhere): the idle keep-alive connections open before the
   * handoffs; of those, the ones still open after them that answered one more request on the
   * same connection (kept), and the ones the server had closed.
   */
  readonly idleOpened: number | null;
  readonly idleKept: number | null;
  readonly idleClosed: number | null;
  /** This project's: connections moved (offered to the new daemon) per committed handoff, and their median; null for peers. */
  readonly connsOffered: readonly number[] | null;
  readonly movedPerHandoff: number | null;
  /** Every planned handoff committed and the harness did not fail. */
  readonly ok: boolean;
  /** The harness failed (the system would not start, a restart never answered): nothing measured is valid. */
  readonly failure: string | null;
}

/** A run of `p.curveHandoffs` handoffs with the prober (and `idle` idle keep-alive connections); never throws: a failure is the point's. */
async function curvePoint(system: System, x: number, p: Preset, idle: number, log: (line: string) => void): Promise<CurvePoint> {
  const empty: CurvePoint = { system: system.id, label: system.label, ours: system.ours, x, handoffs: [], handoffsPlanned: p.curveHandoffs, notCommitted: [], handoffMs: 0, longestUnservedMs: 0, baselineUnservedMs: 0, unservedPerHandoffP50Ms: 0, unservedPerHandoffMs: [], addedUnservedMs: 0, drainMs: null, errors: 0, refused: 0, idleOpened: null, idleKept: null, idleClosed: null, connsOffered: null, movedPerHandoff: null, ok: false, failure: null };
  const port = await freePort();
  try {
    await system.start(port);
    const { results, value: handoffs } = await underLoad(p, [{ kind: 'probe', port, connections: 0, probeEveryMs: p.probeEveryMs, writers: 0, idleConnections: idle }], () => handoffsOnSchedule(system, p, p.curveHandoffs));
    const probe = probeOf(results);
    if (idle > 0 && probe.idleOpen < idle) throw new Error(`only ${probe.idleOpen} of ${idle} idle connections were open`);
    const drains = handoffs.map((h) => h.phases?.preparing).filter((d): d is number => d !== undefined);
    const failed = notCommitted(handoffs, p.curveHandoffs);
    const baseline = unservedBefore(probe.results, handoffs[0]?.triggeredAt ?? Infinity);
    const each = unservedPerHandoff(probe.results, handoffs.map((h) => h.triggeredAt));
    const perHandoff = median(each);
    const offered = connsOffered(system, handoffs);
    return {
      ...empty,
      handoffs,
      notCommitted: failed,
      handoffMs: median(commitDurations(handoffs)),
      longestUnservedMs: longestUnserved(probe.results),
      baselineUnservedMs: baseline,
      unservedPerHandoffP50Ms: perHandoff,
      unservedPerHandoffMs: each,
      addedUnservedMs: Math.max(0, perHandoff - baseline),
      drainMs: drains.length ? median(drains) : null,
      errors: probe.results.filter((r) => r.error !== null).length,
      refused: probe.results.filter((r) => r.error === 'refused').length,
      idleOpened: idle > 0 ? probe.idleOpen : null,
      idleKept: idle > 0 ? probe.idleKept : null,
      idleClosed: idle > 0 ? probe.idleClosed : null,
      connsOffered: offered,
      movedPerHandoff: offered === null ? null : median(offered),
      ok: failed.length === 0,
    };
  } catch (error) {
    const message = (error as Error).message;
    log(`  ${system.label}: the harness failed: ${message}`);
    return { ...empty, failure: message };
  } finally {
    await system.stop();
  }
}

/** This project's two ways of handing off a daemon's open connections, for `app`: moved (the default), or drained. */
function moveAndDrain(app: 'hello' | 'ws'): HandoffSystem[] {
  return [
    new HandoffSystem(app, { id: `handoff-${app}`, label: 'handoff, connections move' }),
    new HandoffSystem(app, { id: `handoff-${app}-nomove`, label: 'handoff, drain (move_connections = false)', moveConnections: false }),
  ];
}

/**
 * Handoff duration and stall against the number of open (idle keep-alive) connections: this
 * project's handoff with connections moving (the default) and draining (`move_connections =
 * false`), and PM2's cluster reload, side by side at each point.
 */
export async function connectionCurve(p: Preset, log: (line: string) => void): Promise<CurvePoint[]> {
  const points: CurvePoint[] = [];
  for (const n of p.curveConnections) {
    for (const system of [...moveAndDrain('hello'), new Pm2System('cluster', true, 'hello')]) {
      const why = system.unavailable();
      if (why !== null) continue;
      log(`  ${system.label}: ${n} open connections`);
      points.push(await curvePoint(system, n, p, n, log));
    }
  }
  return points;
}

/** A point of the WebSocket curve: `x` clients of the ws-chat daemon through `handoffsPlanned` handoffs. */
export interface WsPoint {
  readonly system: string;
  readonly label: string;
  readonly ours: boolean;
  readonly x: number;
  readonly handoffs: readonly HandoffTiming[];
  readonly handoffsPlanned: number;
  readonly notCommitted: readonly NotCommitted[];
  /** Trigger to commit, median over the handoffs that committed. */
  readonly handoffMs: number;
  /** The longest a fresh connection waited, from the first trigger to the end. */
  readonly longestUnservedMs: number;
  /** Per handoff, the longest wait from its trigger to the next (the last: to the end); the median over handoffs. */
  readonly unservedPerHandoffP50Ms: number;
  /** The same per handoff, in order. */
  readonly unservedPerHandoffMs: readonly number[];
  /** The longest wait with every client open and no handoff yet (the warm-up before the first trigger). */
  readonly baselineUnservedMs: number;
  readonly connsOffered: readonly number[] | null;
  readonly movedPerHandoff: number | null;
  /** What the clients saw (null when the harness failed). */
  readonly clients: Omit<WsResult, 'kind' | 'startedAt' | 'endedAt'> | null;
  /** Failed probes (of which refused). */
  readonly errors: number;
  readonly refused: number;
  readonly ok: boolean;
  readonly failure: string | null;
}

/**
 * The WebSocket clients' reconnect delay and bounds: 1–2 s after the close, no sooner than the
 * drain grace (1 s) — a client that came back sooner could land on the old daemon while it still
 * accepts during its drain, and the ws example closes its clients only when the drain starts.
 */
const WS_RECONNECT = { reconnectMinMs: 1_000, reconnectMaxMs: 2_000, reconnectsMax: 20, openConcurrency: 200 } as const;

/** `n` WebSocket clients and the prober through `p.curveHandoffs` handoffs; never throws: a failure is the point's. */
async function wsPoint(system: System, n: number, p: Preset, log: (line: string) => void): Promise<WsPoint> {
  const empty: WsPoint = { system: system.id, label: system.label, ours: system.ours, x: n, handoffs: [], handoffsPlanned: p.curveHandoffs, notCommitted: [], handoffMs: 0, longestUnservedMs: 0, unservedPerHandoffP50Ms: 0, unservedPerHandoffMs: [], baselineUnservedMs: 0, connsOffered: null, movedPerHandoff: null, clients: null, errors: 0, refused: 0, ok: false, failure: null };
  const port = await freePort();
  try {
    await system.start(port);
    const load: LoadSpec[] = [
      { kind: 'probe', port, connections: 0, probeEveryMs: p.probeEveryMs, writers: 0, idleConnections: 0 },
      { kind: 'ws', port, connections: 0, probeEveryMs: 0, writers: 0, idleConnections: 0, ws: { clients: n, messagesPerSecond: p.wsMessagesPerSecond, ...WS_RECONNECT } },
    ];
    const { results, value: handoffs } = await underLoad(p, load, () => handoffsOnSchedule(system, p, p.curveHandoffs));
    const probe = probeOf(results);
    const ws = wsOf(results);
    if (ws.opened < n) throw new Error(`only ${ws.opened} of ${n} WebSocket clients were open`);
    const first = handoffs[0]?.triggeredAt ?? Infinity;
    const failed = notCommitted(handoffs, p.curveHandoffs);
    const offered = connsOffered(system, handoffs);
    const each = unservedPerHandoff(probe.results, handoffs.map((h) => h.triggeredAt));
    const clients = { clients: ws.clients, opened: ws.opened, kept: ws.kept, closedByServer: ws.closedByServer, closeCodes: ws.closeCodes, reconnects: ws.reconnects, reconnectFailures: ws.reconnectFailures, connectedAtEnd: ws.connectedAtEnd, pidsAtEnd: ws.pidsAtEnd, messagesSent: ws.messagesSent, messagesAnswered: ws.messagesAnswered, messagesLate: ws.messagesLate, messagesUnanswered: ws.messagesUnanswered, roundTripMs: ws.roundTripMs };
    return {
      ...empty,
      handoffs,
      notCommitted: failed,
      handoffMs: median(commitDurations(handoffs)),
      longestUnservedMs: longestUnserved(probe.results.filter((r) => r.startedAt >= first)),
      unservedPerHandoffP50Ms: median(each),
      unservedPerHandoffMs: each,
      // The prober starts before the clients are all open: the baseline is the warm-up after.
      baselineUnservedMs: unservedBefore(probe.results.filter((r) => r.startedAt >= ws.startedAt), first),
      connsOffered: offered,
      movedPerHandoff: offered === null ? null : median(offered),
      clients,
      errors: probe.results.filter((r) => r.error !== null).length,
      refused: probe.results.filter((r) => r.error === 'refused').length,
      ok: failed.length === 0,
    };
  } catch (error) {
    const message = (error as Error).message;
    log(`  ${system.label}: the harness failed: ${message}`);
    return { ...empty, failure: message };
  } finally {
    await system.stop();
  }
}

/**
 * WebSocket clients of the ws-chat example daemon through handoffs, with connections moving
 * (the default) and draining (`move_connections = false`: the daemon closes its clients with
 * 1012 and they reconnect), side by side at each number of clients.
 */
export async function wsCurve(p: Preset, log: (line: string) => void): Promise<WsPoint[]> {
  const points: WsPoint[] = [];
  for (const n of p.curveWsClients) {
    for (const system of moveAndDrain('ws')) {
      log(`  ${system.label}: ${n} WebSocket clients`);
      points.push(await wsPoint(system, n, p, log));
    }
  }
  return points;
}

/** Writes a key-value log of `keys` records (the format apps/kv replays), as a data directory. */
function seedKv(keys: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-bench-kv-seed-'));
  const chunks: string[] = [];
  for (let i = 0; i < keys; i++) chunks.push(`${JSON.stringify({ k: `key-${i}`, v: `value-${i}-${'x'.repeat(16)}` })}\n`);
  writeFileSync(join(dir, 'kv.log'), chunks.join(''));
  return dir;
}

/**
 * The data-size curve's `[timeouts] total`: a handoff that cannot finish (at 1M keys, say) is
 * given up by the supervisor after this, so a point stays bounded in time.
 */
export const DATA_TOTAL_MS = 30_000;

/** The systems of the data-size curve, each on its own copy of `seed`. */
function dataSystems(copy: () => string): System[] {
  return [
    new HandoffSystem('kv', { dataDir: copy(), id: 'handoff-kv-preload', label: 'handoff, preload', totalTimeoutMs: DATA_TOTAL_MS }),
    new HandoffSystem('kv', { dataDir: copy(), env: { KV_PRELOAD: '0' }, id: 'handoff-kv-nopreload', label: 'handoff, no preload (KV_PRELOAD=0)', totalTimeoutMs: DATA_TOTAL_MS }),
    new NaiveRestart('kv', copy(), 'kill and restart'),
  ];
}

/**
 * Handoff duration and stall against the key-value daemon's data size: a handoff with
 * preload (the kv daemon's default), one without (KV_PRELOAD=0), and a kill and restart,
 * side by side at each size.
 */
export async function dataCurve(p: Preset, log: (line: string) => void): Promise<CurvePoint[]> {
  const points: CurvePoint[] = [];
  for (const keys of p.curveKeys) {
    const seed = seedKv(keys);
    const copies: string[] = [];
    const copy = (): string => {
      const dir = mkdtempSync(join(tmpdir(), 'handoff-bench-kv-data-'));
      cpSync(seed, dir, { recursive: true });
      copies.push(dir);
      return dir;
    };
    try {
      for (const system of dataSystems(copy)) {
        log(`  ${system.label}: ${keys} keys`);
        points.push(await curvePoint(system, keys, p, 0, log));
      }
    } finally {
      for (const dir of [seed, ...copies]) rmSync(dir, { recursive: true, force: true });
    }
  }
  return points;
}

/** Requests per second of the hello app with no handoff, per way of running it. */
export interface OverheadRow {
  readonly id: string;
  readonly label: string;
  readonly rps: readonly number[];
  readonly medianRps: number;
  readonly relative: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/** The data path: bare Node vs this project's held listener vs PM2 cluster with one instance. */
export async function overhead(p: Preset, log: (line: string) => void): Promise<OverheadRow[]> {
  const systems: { id: string; label: string; system: System }[] = [
    { id: 'bare', label: 'bare Node (listens itself)', system: new NaiveRestart('hello') },
    { id: 'handoff', label: 'handoff (listener held by the supervisor, inherited)', system: new HandoffSystem('hello') },
    { id: 'pm2-cluster', label: 'PM2 cluster mode, 1 instance', system: new Pm2System('cluster', false, 'hello') },
  ].filter((s) => s.system.unavailable() === null);
  const ports = new Map<string, number>();
  const runs = new Map<string, CannonResult[]>();
  try {
    for (const s of systems) {
      const port = await freePort();
      await s.system.start(port);
      ports.set(s.id, port);
      runs.set(s.id, []);
    }
    // Interleaved rounds, so drift of the machine hits every system alike.
    for (let round = 0; round < p.overheadRounds; round++) {
      for (const s of systems) {
        log(`  round ${round + 1}/${p.overheadRounds}: ${s.label}`);
        const port = ports.get(s.id) ?? 0;
        const { results } = await underLoad(p, [{ kind: 'cannon', port, connections: p.connections, probeEveryMs: 0, writers: 0, idleConnections: 0 }], () => sleep(p.overheadMs));
        runs.get(s.id)?.push(cannonOf(results));
      }
    }
  } finally {
    for (const s of systems) await s.system.stop();
  }
  const rows = systems.map((s) => {
    const rs = runs.get(s.id) ?? [];
    const latencies = rs.flatMap((r) => r.latency);
    return { id: s.id, label: s.label, rps: rs.map(okRps), medianRps: median(rs.map(okRps)), relative: 0, p50Ms: quantile(latencies, 0.5), p99Ms: quantile(latencies, 0.99) };
  });
  const bare = rows.find((r) => r.id === 'bare')?.medianRps ?? 0;
  return rows.map((r) => ({ ...r, relative: bare > 0 ? r.medianRps / bare : 0 }));
}
