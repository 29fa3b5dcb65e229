/**
 * What the state machines share: the transition shape, timers and default timeouts.
 *
 * A machine is a pure function `(state, event) -> { state, effects, violation? }`. It performs
 * no I/O and reads no clock: time arrives as `timeout` events for timers it armed with
 * `setTimer` effects. Drivers (in `@handoff/core` and `@handoff/supervisor`) run effects in
 * order and feed back what happened as events. Every (state, event) pair is defined: a
 * transition (possibly to the same state with no effects) or a typed protocol violation,
 * which the machine handles itself (the supervisor aborts, a daemon ends the session).
 */
import type { HandoffProtocolError } from './errors.js';
import type { Hello, Role } from './messages.js';
import type { VersionRange } from './negotiation.js';

/** The result of one transition. */
export interface Transition<S, E> {
  readonly state: S;
  readonly effects: readonly E[];
  /** Set when the event broke the protocol; `effects` already hold the machine's reaction. */
  readonly violation?: HandoffProtocolError;
}

/** Arms (or re-arms) a named timer; the driver later feeds `{ type: 'timeout', timer }`. */
export interface SetTimer<T extends string> {
  readonly type: 'setTimer';
  readonly timer: T;
  readonly ms: number;
}
/** Disarms a named timer; a timeout for it that is already queued is then stale and ignored. */
export interface CancelTimer<T extends string> {
  readonly type: 'cancelTimer';
  readonly timer: T;
}

/** Timeouts of a handoff, in milliseconds. */
export interface Timeouts {
  /** Interval between heartbeats a working party sends. */
  readonly heartbeatMs: number;
  /** A peer silent for this long is dead (both directions). */
  readonly livenessMs: number;
  /** From spawning the successor to its Hello. */
  readonly helloMs: number;
  /** From PrepareHandoff to Drained (also sent to the incumbent as `deadlineMs`). */
  readonly drainMs: number;
  /** Idle keep-alive connections are closed after this grace (sent as `drainGraceMs`). */
  readonly drainGraceMs: number;
  /** From SealRequest to SealComplete. */
  readonly sealMs: number;
  /** From Begin to Ready. */
  readonly readyMs: number;
  /** The whole handoff, from start to commit or abort. */
  readonly totalMs: number;
  /** From SIGTERM of an aborted successor to SIGKILL. */
  readonly stopGraceMs: number;
}

/** Defaults of {@link Timeouts} (see PROTOCOL.md, "Timeouts"). */
export const DEFAULT_TIMEOUTS: Timeouts = {
  heartbeatMs: 500,
  livenessMs: 3_000,
  helloMs: 10_000,
  drainMs: 30_000,
  drainGraceMs: 1_000,
  sealMs: 30_000,
  readyMs: 30_000,
  totalMs: 120_000,
  stopGraceMs: 2_000,
};

/** What a daemon (incumbent or successor) says about itself, and its timing. */
export interface DaemonConfig {
  readonly pid: number;
  readonly buildId: string;
  readonly versions: VersionRange;
  readonly capabilities: number;
  readonly heartbeatMs: number;
  readonly livenessMs: number;
}

/** The Hello a daemon with `config` sends in `role`. */
export function helloFor(config: DaemonConfig, role: Role): Hello {
  return {
    type: 'Hello',
    role,
    pid: config.pid,
    buildId: config.buildId,
    protoMin: config.versions.min,
    protoMax: config.versions.max,
    capabilities: config.capabilities,
  };
}
