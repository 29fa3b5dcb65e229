/** Shapes shared by the orchestrator, the load workers and the report. */
import type { RequestResult } from '@handoff/testkit';

export type ErrorKind = 'refused' | 'reset' | 'timeout' | 'non2xx' | 'other';
export const ERROR_KINDS: readonly ErrorKind[] = ['refused', 'reset', 'timeout', 'non2xx', 'other'];

/** What a load worker is told (argv[2], JSON). */
export interface LoadConfig {
  readonly kind: 'cannon' | 'probe';
  readonly port: number;
  /** cannon: keep-alive connections. */
  readonly connections: number;
  /** probe: interval between fresh connections; 0 disables. */
  readonly probeEveryMs: number;
  /** probe: ledger writers (PUT /kv/<key>), for a stateful daemon. */
  readonly writers: number;
  /** probe: idle keep-alive connections held open for the whole run. */
  readonly idleConnections: number;
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
}

export type WorkerMessage = { readonly type: 'ready' } | { readonly type: 'result'; readonly result: CannonResult | ProbeResult };

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
}

/** A handoff of a run that did not commit: its index in the run (0-based), code and reason. */
export interface NotCommitted extends Abort {
  readonly index: number;
}
