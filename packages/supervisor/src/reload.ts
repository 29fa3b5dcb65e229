/**
 * Reload in place through the control session (PROTOCOL.md section 6, "Reload"): ask the
 * serving daemon to swap one of its plugins or to re-read its configuration, and follow it
 * to its outcome. Nothing changes hands: no journal, no lock, no successor.
 */
import { randomInt } from 'node:crypto';
import { hasCapability } from '@handoff/protocol';
import type { ReloadDone, ToSupervisorMessage } from '@handoff/protocol';
import { SupervisorError, SupervisorErrorCode } from './errors.js';
import type { IncumbentSession } from './session.js';

/** What to reload. */
export type ReloadTarget = { readonly plugin: string; readonly source?: string } | { readonly config: true };

/** A step the daemon reported. */
export interface ReloadStepReport {
  readonly phase: string;
  readonly detail: string;
}

/** How a reload ended, as the daemon reported it. */
export interface ReloadResult {
  readonly pid: number;
  readonly target: ReloadTarget;
  readonly outcome: ReloadDone['outcome'];
  readonly version: string;
  /** Empty when reloaded. */
  readonly error: string;
  readonly durationMs: number;
  readonly cutCalls: number;
}

/**
 * How long the daemon may stay silent about a reload before the supervisor stops waiting
 * (the reference daemon reports a step at least every 10 s while a reload runs, PROTOCOL.md
 * section 6): only a daemon that lost the request, or hangs, is this quiet.
 */
export const RELOAD_SILENCE_MS = 60_000;

// A daemon reports on a reload to whichever session is open then: a supervisor restarted
// mid-reload must not take the old reload's answer for its own, so ids do not restart at 1.
let nextRequestId = randomInt(1, 0xffff_0000);

/** Sends a Reload on `session` and resolves with the daemon's ReloadDone. */
export function reloadThrough(
  daemon: { readonly pid: number; readonly session: IncumbentSession; readonly capabilities: number },
  target: ReloadTarget,
  onStep?: (step: ReloadStepReport) => void,
  silenceMs: number = RELOAD_SILENCE_MS,
): Promise<ReloadResult> {
  const { pid, session } = daemon;
  if (!hasCapability(daemon.capabilities, 'Reload')) {
    const build = session.hello.buildId || '?';
    return Promise.reject(
      new SupervisorError(
        SupervisorErrorCode.WrongState,
        `the daemon (pid ${pid}, build ${build}) cannot reload in place: it does not announce the Reload capability (a daemon built with runDaemon's plugins or reloadConfig does); "handoffctl upgrade" restarts it with its new files instead`,
      ),
    );
  }
  const requestId = nextRequestId;
  nextRequestId = nextRequestId >= 0xffff_fffe ? 1 : nextRequestId + 1;
  const { channel } = session;
  return new Promise<ReloadResult>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        finish(new SupervisorError(SupervisorErrorCode.NoIncumbent, `the daemon (pid ${pid}) said nothing about the reload for ${Math.round(silenceMs / 1000)} s: its outcome is unknown (it may still finish it); see the daemon's log and metrics`));
      }, silenceMs);
    };
    const onMessage = (message: ToSupervisorMessage): void => {
      if (message.type === 'ReloadProgress' && message.requestId === requestId) {
        arm();
        onStep?.({ phase: message.phase, detail: message.detail });
      } else if (message.type === 'ReloadDone' && message.requestId === requestId) {
        finish({ pid, target, outcome: message.outcome, version: message.version, error: message.error, durationMs: message.durationMs, cutCalls: message.cutCalls });
      }
    };
    const onClose = (reason: string): void => {
      finish(new SupervisorError(SupervisorErrorCode.NoIncumbent, `the control session with the daemon (pid ${pid}) closed before it answered the reload (${reason}): its outcome is unknown; see the daemon's log and metrics`));
    };
    const finish = (outcome: ReloadResult | SupervisorError): void => {
      clearTimeout(timer);
      channel.off('message', onMessage);
      channel.off('close', onClose);
      if (outcome instanceof SupervisorError) reject(outcome);
      else resolve(outcome);
    };
    channel.on('message', onMessage);
    channel.once('close', onClose);
    arm();
    try {
      channel.send('config' in target
        ? { type: 'Reload', requestId, target: 'config', name: '', source: '' }
        : { type: 'Reload', requestId, target: 'plugin', name: target.plugin, source: target.source ?? '' });
    } catch (error) {
      finish(new SupervisorError(SupervisorErrorCode.InvalidArgument, `the reload cannot be asked for: ${(error as Error).message}`));
    }
  });
}
