/**
 * Errors of `@handoff/core`. Every error this package throws is a {@link HandoffError} with a
 * stable `code`; branch on `code` (`instanceof` breaks with two installed copies).
 */

/** Stable error codes of `@handoff/core`. */
export const CoreErrorCode = {
  /** The data-directory lock is held by another process. */
  LockHeld: 'HANDOFF_LOCK_HELD',
  /** The lock file could not be opened or locked for a reason other than contention. */
  LockFailed: 'HANDOFF_LOCK_FAILED',
  /** The spawn contract's environment variables are malformed. */
  EnvInvalid: 'HANDOFF_ENV_INVALID',
  /** A listener name was asked for that was not inherited. */
  ListenerMissing: 'HANDOFF_LISTENER_MISSING',
  /** Every copy of an inherited listener has been used: it cannot accept again in this process. */
  NoReserve: 'HANDOFF_NO_RESERVE',
  /** A method was called in a state that does not allow it. */
  WrongState: 'HANDOFF_WRONG_STATE',
  /** The channel to the supervisor closed or broke. */
  ChannelClosed: 'HANDOFF_CHANNEL_CLOSED',
  /** The peer broke the protocol. */
  Protocol: 'HANDOFF_PROTOCOL',
  /** The supervisor aborted the handoff. */
  Aborted: 'HANDOFF_ABORTED',
  /** Taking over (lock, open, continuity check, listen) failed. */
  TakeoverFailed: 'HANDOFF_TAKEOVER_FAILED',
  /** A configuration value given to this package is invalid. */
  InvalidArgument: 'HANDOFF_INVALID_ARGUMENT',
} as const;

/** One of {@link CoreErrorCode}. */
export type CoreErrorCode = (typeof CoreErrorCode)[keyof typeof CoreErrorCode];

const BRAND = Symbol.for('@handoff/core.HandoffError');

/** The one error class of `@handoff/core`. */
export class HandoffError extends Error {
  override readonly name = 'HandoffError';
  readonly code: CoreErrorCode;

  constructor(code: CoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    Object.defineProperty(this, BRAND, { value: true });
  }

  /** True for a HandoffError from any installed copy of this package. */
  static is(value: unknown): value is HandoffError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

/** The message of any thrown value. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
