/**
 * What the supervisor tells observers, on `node:diagnostics_channel`: one named channel per
 * kind of event (as undici does), each with a documented message. A library never logs; the
 * `handoff-supervisor` binary subscribes to these and writes its log from them.
 *
 *     import { subscribe } from 'node:diagnostics_channel';
 *     import { SupervisorChannels } from '@handoff/supervisor';
 *     subscribe(SupervisorChannels.restart, (m) => console.warn('restarting the daemon:', m));
 */
import { channel } from 'node:diagnostics_channel';
import type { DaemonProgram, DrainProgress, OutcomeKind, SupervisorPhase } from '@handoff/protocol';

/** What a draining incumbent still waits for (its DrainProgress), and when the supervisor heard it. */
export type DrainProgressInfo = Omit<DrainProgress, 'type' | 'handoffId'>;

/** The channel names. */
export const SupervisorChannels = {
  /** A handoff moved from one phase to the next. */
  phase: 'handoff:supervisor:phase',
  /** A handoff ended: its outcome. */
  handoff: 'handoff:supervisor:handoff',
  /** Recovery (at start, and before each restart) finished. */
  recovered: 'handoff:supervisor:recovered',
  /** The journal could not be read (a damaged one is moved aside) or written. */
  journalError: 'handoff:supervisor:journal-error',
  /** A daemon was spawned for a cold start. */
  coldStart: 'handoff:supervisor:cold-start',
  /** A daemon started to serve. */
  daemonServing: 'handoff:supervisor:daemon-serving',
  /** A daemon process died. */
  daemonExited: 'handoff:supervisor:daemon-exited',
  /** The control session with the serving daemon ended. */
  sessionClosed: 'handoff:supervisor:session-closed',
  /** Something answered on the control socket but was not taken as the daemon (the reason says why). */
  sessionRefused: 'handoff:supervisor:session-refused',
  /** The serving daemon died: a restart is scheduled. */
  restart: 'handoff:supervisor:restart',
  /** The supervisor gave up restarting (crash loop, or policy `never`). */
  gaveUp: 'handoff:supervisor:gave-up',
  /** A daemon of a handoff sent nothing past the liveness timeout but works on the CPU (its event loop blocked): it is given more time. */
  peerBusy: 'handoff:supervisor:peer-busy',
  /** The incumbent reported progress of a long seal. */
  sealProgress: 'handoff:supervisor:seal-progress',
  /** The draining incumbent reported what it still waits for (PROTOCOL.md §6, "Long-lived work"). */
  drainProgress: 'handoff:supervisor:drain-progress',
  /** The incumbent drained, and the seal waits until the descriptors forwarded to the successor are written (PROTOCOL.md §2, "Descriptor channel"). */
  descriptorsPending: 'handoff:supervisor:descriptors-pending',
  /** A state machine rejected an event: a peer broke the protocol, or a bug. */
  violation: 'handoff:supervisor:violation',
  /** A new version's probation started or ended (passed, reverted, failed). */
  probation: 'handoff:supervisor:probation',
  /** A health check during a probation. */
  health: 'handoff:supervisor:health',
  /** The supervisor goes back to the last known good version. */
  revert: 'handoff:supervisor:revert',
} as const;

/** The message published on each channel (every message also has `at`, ms since the epoch). */
export interface SupervisorChannelMessages {
  phase: { readonly handoffId: string; readonly from: SupervisorPhase; readonly to: SupervisorPhase; readonly phaseMs: number };
  handoff: { readonly handoffId: string; readonly outcome: OutcomeKind; readonly code: string | null; readonly reason: string | null; readonly totalMs: number };
  recovered: { readonly journalPhase: string | null; readonly adopted: number | null; readonly stopped: readonly number[] };
  journalError: { readonly reason: string };
  coldStart: { readonly pid: number; readonly command: string };
  daemonServing: { readonly pid: number; readonly generation: number; readonly how: 'adopted' | 'started' | 'handoff' };
  daemonExited: { readonly pid: number; readonly reason: string };
  sessionClosed: { readonly pid: number; readonly reason: string };
  sessionRefused: { readonly reason: string };
  restart: { readonly reason: string; readonly delayMs: number; readonly failuresInWindow: number };
  gaveUp: { readonly reason: string };
  peerBusy: { readonly handoffId: string; readonly peer: 'incumbent' | 'successor'; readonly pid: number; readonly silentMs: number; readonly cpuMs: number };
  sealProgress: { readonly handoffId: string; readonly completed: number; readonly total: number };
  drainProgress: { readonly handoffId: string } & DrainProgressInfo;
  descriptorsPending: { readonly handoffId: string; readonly pending: number; readonly successorPid: number | null };
  violation: { readonly machine: 'handoff' | 'lifecycle'; readonly error: string };
  probation: { readonly pid: number; readonly outcome: 'started' | 'passed' | 'reverted' | 'failed'; readonly reason: string | null; readonly ms: number | null };
  health: { readonly pid: number; readonly ok: boolean; readonly detail: string; readonly failuresInRow: number };
  revert: { readonly reason: string; readonly how: 'handoff' | 'restart'; readonly from: DaemonProgram; readonly to: DaemonProgram };
}

/** The name of a kind of event. */
export type SupervisorChannel = keyof typeof SupervisorChannels;

const channels = Object.fromEntries(Object.entries(SupervisorChannels).map(([key, name]) => [key, channel(name)])) as Record<SupervisorChannel, ReturnType<typeof channel>>;

/** Publishes `message` on the channel of `kind`, if anyone listens. */
export function publish<K extends SupervisorChannel>(kind: K, message: SupervisorChannelMessages[K]): void {
  const c = channels[kind];
  if (c.hasSubscribers) c.publish({ ...message, at: Date.now() });
}
