/**
 * Errors of `@handoff/supervisor`: one class, a stable `code` on each.
 */

/** Stable error codes of `@handoff/supervisor`. */
export const SupervisorErrorCode = {
  /** A handoff is already running; the first one is unaffected. */
  InProgress: 'HANDOFF_IN_PROGRESS',
  /** A listener could not be bound or inherited. */
  Listener: 'HANDOFF_LISTENER',
  /** Node's internal API for holding a socket without accepting is missing or broken. */
  InternalApi: 'HANDOFF_INTERNAL_API',
  /** A daemon could not be spawned. */
  Spawn: 'HANDOFF_SPAWN',
  /** No incumbent serves: the operation needs one. */
  NoIncumbent: 'HANDOFF_NO_INCUMBENT',
  /** The journal could not be written or read. */
  Journal: 'HANDOFF_JOURNAL',
  /** The supervisor was used in a state that does not allow it. */
  WrongState: 'HANDOFF_WRONG_STATE',
  /** A configuration value is invalid. */
  InvalidArgument: 'HANDOFF_INVALID_ARGUMENT',
} as const;

/** One of {@link SupervisorErrorCode}. */
export type SupervisorErrorCode = (typeof SupervisorErrorCode)[keyof typeof SupervisorErrorCode];

const BRAND = Symbol.for('@handoff/supervisor.SupervisorError');

/** The one error class of `@handoff/supervisor`. */
export class SupervisorError extends Error {
  override readonly name = 'SupervisorError';
  readonly code: SupervisorErrorCode;

  constructor(code: SupervisorErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    Object.defineProperty(this, BRAND, { value: true });
  }

  static is(value: unknown): value is SupervisorError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}
