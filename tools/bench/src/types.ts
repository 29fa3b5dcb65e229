/** Shapes shared by the orchestrator, the load workers and the report. */
import type { RequestResult } from '@handoff/testkit';

export type ErrorKind = 'refused' | 'reset' | 'timeout' | 'non2xx' | 'other';
export const ERROR_KINDS: readonly ErrorKind[] = ['refused', 'reset', 'timeout', 'non2xx', 'other'];

/** The WebSocket clients of a `ws` load worker (the ws-chat example daemon's protocol). */
export interface WsLoadConfig {
  /** Clients opened (each answered once) before the worker says it is ready. */
  readonly clients: number;
  /** The light message load: messages per second over all clients, round-robin, one in flight per client at most; 0: idle. */
  readonly messagesPerSecond: number;
  /** A client the server closed reconnects after a delay drawn uniformly from this range, ms. */
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  /** Reconnect attempts per client at most, over the run. */
  readonly reconnectsMax: number;
  /** Connections being opened at once, at most. */
  readonly openConcurrency: number;
}

/** What a load worker is told (argv[2], JSON). */
export interface LoadConfig {
  readonly kind: 'cannon' | 'probe' | 'ws';
  readonly port: number;
  /** cannon: keep-alive connections. */
  readonly connections: number;
  /** probe: interval between fresh connections; 0 disables. */
  readonly probeEveryMs: number;
  /** probe: ledger writers (PUT /kv/<key>), for a stateful daemon. */
  readonly writers: number;
  /** probe: idle keep-alive connections held open for the whole run. */
  readonly idleConnections: number;
  /** ws: the WebSocket clients. */
  readonly ws?: WsLoadConfig;
  /** A request unanswered this long is a timeout. */
  readonly requestTimeoutMs: number;
  readonly maxDurationMs: number;
}

export interface CannonResult {
  readonly kind: 'cannon';
  readonly startedAt: number;
  readonly endedAt: number;
  /** Per response: epoch ms, latency ms, status code. */
  readonly at: readonly number[];
  readonly latency: readonly number[];
  readonly status: readonly number[];
  readonly errors: readonly { readonly at: number; readonly kind: ErrorKind }[];
}

export interface ProbeResult {
  readonly kind: 'probe';
  readonly results: readonly RequestResult[];
  readonly ledger: readonly (readonly [string, string])[];
  /** How many idle connections were open once all had been answered. */
  readonly idleOpen: number;
  /**
   * Of those, how many were still open at the end and answered one more request on the same
   * connection (sent after the prober stopped): kept open and usable across the handoffs.
   */
  readonly idleKept: number;
  /** Of those, how many the server had closed before that last request (they saw 'end' or 'close'). */
  readonly idleClosed: number;
}

/** What a `ws` load worker saw. */
export interface WsResult {
  readonly kind: 'ws';
  readonly clients: number;
  /** Clients open and answered once before the handoffs. */
  readonly opened: number;
  /** Of those original connections, how many were still open at the end and answered a last message on it. */
  readonly kept: number;
  /** Connections (original or reconnected) the server closed, or that broke, while the worker did not close them. */
  readonly closedByServer: number;
  /** Their close codes, with counts (1006: closed without a close frame). */
  readonly closeCodes: Readonly<Record<string, number>>;
  /** Reconnections that succeeded (open and answered once), and attempts that failed. */
  readonly reconnects: number;
  readonly reconnectFailures: number;
  /** Clients with a connection that answered the last message (original or reconnected). */
  readonly connectedAtEnd: number;
  /** Distinct daemon pids that answered the last messages. */
  readonly pidsAtEnd: number;
  /**
   * The message load: sent, answered (of which after more than the request timeout: late), and
   * never answered (the connection closed first, or still unanswered at the end).
   */
  readonly messagesSent: number;
  readonly messagesAnswered: number;
  readonly messagesLate: number;
  readonly messagesUnanswered: number;
  /** Round trip of the answered messages of the load, ms. */
  readonly roundTripMs: { readonly p50: number; readonly p99: number; readonly max: number };
  /** Epoch ms: all clients open (ready), and the stop. */
  readonly startedAt: number;
  readonly endedAt: number;
}

export type WorkerMessage = { readonly type: 'ready' } | { readonly type: 'result'; readonly result: CannonResult | ProbeResult | WsResult };

/** Why a handoff did not commit: the supervisor's abort code and reason, or the harness's own (`BENCH_*`). */
export interface Abort {
  readonly code: string;
  readonly reason: string;
}

/** The harness's own abort codes (the supervisor's are `HANDOFF_*`). */
export const BenchAbort = {
  /** The supervisor did not answer the trigger in time, or could not be reached. */
  NoAnswer: 'BENCH_NO_ANSWER',
  /** The supervisor answered without a result line. */
  NoResult: 'BENCH_NO_RESULT',
  /** Not triggered: the harness gave up on an earlier handoff of the same run. */
  NotTriggered: 'BENCH_NOT_TRIGGERED',
} as const;

/** One handoff (or restart, or reload) as the orchestrator saw it. */
export interface HandoffTiming {
  /** Epoch ms when the trigger was sent. */
  readonly triggeredAt: number;
  /** Epoch ms when the new version was the only one serving (each system's own signal of it); for a handoff that did not commit, when it was given up. */
  readonly committedAt: number;
  /** It committed (the new version serves). */
  readonly ok: boolean;
  /** Why it did not commit; null when it did. */
  readonly abort: Abort | null;
  readonly detail: string;
  /** This project only: the supervisor's time per protocol phase. */
  readonly phases?: Readonly<Record<string, number>>;
  /**
   * This project only: what the old daemon's drain reported (the handoff result's `drained`):
   * connections it closed unfinished, work it cut, connections it offered (moved) to the new one.
   */
  readonly drained?: Drained | null;
}

/** A handoff result's `drained`: what the old daemon's drain reported. */
export interface Drained {
  readonly openConnsRemaining: number;
  readonly workCut: number;
  readonly connsOffered: number;
}

/** A handoff of a run that did not commit: its index in the run (0-based), code and reason. */
export interface NotCommitted extends Abort {
  readonly index: number;
}
