/**
 * Errors of handoff: every stable error code of every package, defined once, and the one
 * error base class the packages subclass.
 *
 * Branch on `code`. `instanceof` works too, also across two installed copies of a package:
 * {@link HandoffError} implements `Symbol.hasInstance` with a brand that each instance
 * carries under a `Symbol.for` key, so an error thrown by one copy is an instance of the
 * classes of another.
 */

/**
 * Every error and outcome code of handoff. Codes are stable across releases; what each one
 * means is documented here and, for the codes that travel on the wire, in PROTOCOL.md.
 */
export const ErrorCode = {
  // ---- the wire (codec and validation; PROTOCOL.md section 12) --------------------------
  /** A frame's length field exceeds the decoder's maximum; the stream is unusable. */
  FrameTooLarge: 'HANDOFF_FRAME_TOO_LARGE',
  /** A frame's length field is too small to hold the version field; the stream is unusable. */
  FrameInvalid: 'HANDOFF_FRAME_INVALID',
  /** The stream ended in the middle of a frame. */
  FrameTruncated: 'HANDOFF_FRAME_TRUNCATED',
  /** A frame carries a protocol version this implementation does not speak. */
  UnsupportedVersion: 'HANDOFF_UNSUPPORTED_VERSION',
  /** The payload is not valid msgpack, or not a msgpack map. */
  MalformedPayload: 'HANDOFF_MALFORMED_PAYLOAD',
  /** The payload's type tag names no message of this version. */
  UnknownMessage: 'HANDOFF_UNKNOWN_MESSAGE',
  /** A field is missing, of the wrong type or out of range. */
  InvalidField: 'HANDOFF_INVALID_FIELD',
  /** A valid message arrived on a channel that only carries the other direction. */
  WrongDirection: 'HANDOFF_WRONG_DIRECTION',
  /** The two sides' protocol version ranges do not overlap (also an abort reason). */
  VersionMismatch: 'HANDOFF_VERSION_MISMATCH',
  /** A message or event that the receiving state machine does not allow in its state (also an abort reason). */
  ProtocolViolation: 'HANDOFF_PROTOCOL_VIOLATION',
  /** A journal record could not be parsed or validated. */
  JournalInvalid: 'HANDOFF_JOURNAL_INVALID',

  // ---- why a handoff was abandoned (Abort.code, outcomes; PROTOCOL.md section 8) ---------
  /** The successor could not be spawned. */
  SpawnFailed: 'HANDOFF_SPAWN_FAILED',
  /** The successor exited before the commit point. */
  SuccessorExited: 'HANDOFF_SUCCESSOR_EXITED',
  /** The successor sent nothing for the liveness timeout. */
  SuccessorSilent: 'HANDOFF_SUCCESSOR_SILENT',
  /** The incumbent sent nothing for the liveness timeout while draining or sealing. */
  IncumbentSilent: 'HANDOFF_INCUMBENT_SILENT',
  /** The incumbent's control session ended while it drained or sealed. */
  IncumbentDisconnected: 'HANDOFF_INCUMBENT_DISCONNECTED',
  /** A phase exceeded its deadline. */
  PhaseTimeout: 'HANDOFF_PHASE_TIMEOUT',
  /** The whole handoff exceeded its deadline. */
  TotalTimeout: 'HANDOFF_TOTAL_TIMEOUT',
  /** The incumbent could not drain or seal; it kept its lock. */
  SealFailed: 'HANDOFF_SEAL_FAILED',
  /** The successor's Hello names another pid than the one spawned (a forking wrapper). */
  PidMismatch: 'HANDOFF_PID_MISMATCH',
  /** The successor reported itself unhealthy in Ready. */
  Unhealthy: 'HANDOFF_SUCCESSOR_UNHEALTHY',
  /** The successor's data does not continue the sealed data. */
  RevisionsDiverged: 'HANDOFF_REVISIONS_DIVERGED',
  /** The handoff was cancelled. */
  Cancelled: 'HANDOFF_CANCELLED',
  /** The incumbent died and the successor cannot recover from disk. */
  NoRecovery: 'HANDOFF_NO_RECOVERY',

  // ---- a daemon (@handoff/core) ---------------------------------------------------------
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
  /** The channel to the supervisor closed or broke. */
  ChannelClosed: 'HANDOFF_CHANNEL_CLOSED',
  /** The supervisor aborted the handoff. */
  Aborted: 'HANDOFF_ABORTED',
  /** Taking over (lock, open, continuity check, listen) failed. */
  TakeoverFailed: 'HANDOFF_TAKEOVER_FAILED',
  /** The control socket path is served by another live process. */
  ControlSocketInUse: 'HANDOFF_CONTROL_SOCKET_IN_USE',

  // ---- the supervisor (@handoff/supervisor) ---------------------------------------------
  /** A handoff is already running; the first one is unaffected. */
  InProgress: 'HANDOFF_IN_PROGRESS',
  /** No daemon serves (the supervisor is starting, restarting, stopping or gave up). */
  NoIncumbent: 'HANDOFF_NO_INCUMBENT',
  /** A listener could not be bound or inherited. */
  Listener: 'HANDOFF_LISTENER',
  /** Node's internal API for holding a socket without accepting is missing or broken. */
  InternalApi: 'HANDOFF_INTERNAL_API',
  /** A daemon could not be started. */
  Spawn: 'HANDOFF_SPAWN',
  /** The journal could not be written or read. */
  Journal: 'HANDOFF_JOURNAL',

  // ---- the supervisor binary and its trigger socket (apps/supervisor) --------------------
  /** A trigger-socket request that is not valid (not JSON, unknown command, too long, too slow). */
  BadRequest: 'HANDOFF_BAD_REQUEST',
  /** The pre-handoff check failed; nothing was changed. */
  CheckFailed: 'HANDOFF_CHECK_FAILED',
  /** The configuration file is invalid. */
  Config: 'HANDOFF_CONFIG',
  /** Another supervisor owns the pid file. */
  AlreadyRunning: 'HANDOFF_ALREADY_RUNNING',
  /** The supervisor went away before it answered. */
  SupervisorGone: 'HANDOFF_SUPERVISOR_GONE',

  // ---- any package ----------------------------------------------------------------------
  /** A method was called in a state that does not allow it. */
  WrongState: 'HANDOFF_WRONG_STATE',
  /** An argument or configuration value is invalid (a programming error of the caller). */
  InvalidArgument: 'HANDOFF_INVALID_ARGUMENT',
  /** An unexpected failure: a bug, reported with what was being done. */
  Internal: 'HANDOFF_INTERNAL',
} as const;

/** One of {@link ErrorCode}. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Picks some codes of {@link ErrorCode}: a package's own set, without writing a code string twice. */
function pick<const K extends readonly (keyof typeof ErrorCode)[]>(...keys: K): { readonly [P in K[number]]: (typeof ErrorCode)[P] } {
  return Object.freeze(Object.fromEntries(keys.map((k) => [k, ErrorCode[k]]))) as { readonly [P in K[number]]: (typeof ErrorCode)[P] };
}

/** The codes of `@handoff/protocol`'s errors (codec, validation, machines, journal). */
export const ProtocolErrorCode = pick(
  'FrameTooLarge',
  'FrameInvalid',
  'FrameTruncated',
  'UnsupportedVersion',
  'MalformedPayload',
  'UnknownMessage',
  'InvalidField',
  'WrongDirection',
  'VersionMismatch',
  'ProtocolViolation',
  'JournalInvalid',
  'InvalidArgument',
);
/** One of {@link ProtocolErrorCode}. */
export type ProtocolErrorCode = (typeof ProtocolErrorCode)[keyof typeof ProtocolErrorCode];

/** Why a handoff was abandoned: `Abort.code` on the wire and `HandoffOutcome.code`. */
export const AbortCode = pick(
  'SpawnFailed',
  'SuccessorExited',
  'SuccessorSilent',
  'IncumbentSilent',
  'IncumbentDisconnected',
  'PhaseTimeout',
  'TotalTimeout',
  'SealFailed',
  'VersionMismatch',
  'PidMismatch',
  'Unhealthy',
  'RevisionsDiverged',
  'ProtocolViolation',
  'Cancelled',
  'NoRecovery',
);
/** One of {@link AbortCode}. */
export type AbortCode = (typeof AbortCode)[keyof typeof AbortCode];

/** The codes of `@handoff/core`'s errors. */
export const CoreErrorCode = pick(
  'LockHeld',
  'LockFailed',
  'EnvInvalid',
  'ListenerMissing',
  'NoReserve',
  'WrongState',
  'ChannelClosed',
  'ProtocolViolation',
  'Aborted',
  'TakeoverFailed',
  'RevisionsDiverged',
  'Unhealthy',
  'ControlSocketInUse',
  'InvalidArgument',
);
/** One of {@link CoreErrorCode}. */
export type CoreErrorCode = (typeof CoreErrorCode)[keyof typeof CoreErrorCode];

/** The codes of `@handoff/supervisor`'s errors. */
export const SupervisorErrorCode = pick('InProgress', 'NoIncumbent', 'Listener', 'InternalApi', 'Spawn', 'Journal', 'WrongState', 'InvalidArgument');
/** One of {@link SupervisorErrorCode}. */
export type SupervisorErrorCode = (typeof SupervisorErrorCode)[keyof typeof SupervisorErrorCode];

/** Extra, machine-readable facts attached to an error (field name, limits, states). */
export type ErrorDetails = Readonly<Record<string, string | number | boolean | null>>;

/** The key under which an error carries the brands of its classes (shared by every installed copy). */
const BRANDS = Symbol.for('@handoff/error.brands');

/**
 * The base class of every error handoff throws. `code` is stable across releases; `message`
 * says what happened, what was expected and what to do; `details` carries the facts.
 *
 * Each subclass declares a static `brand` (its name); `x instanceof SomeHandoffErrorClass`
 * checks the brand, so it holds for errors from another installed copy of the package too.
 */
export class HandoffError<C extends string = ErrorCode> extends Error {
  /** The brand of this class; every subclass sets its own. */
  static readonly brand: string = 'HandoffError';
  override readonly name: string = 'HandoffError';
  readonly code: C;
  readonly details: ErrorDetails;

  constructor(code: C, message: string, options: { readonly details?: ErrorDetails; readonly cause?: unknown } = {}) {
    super(message, 'cause' in options ? { cause: options.cause } : undefined);
    this.code = code;
    this.details = options.details ?? {};
    const brands: string[] = [];
    for (let c: unknown = new.target; typeof c === 'function' && c !== Error; c = Object.getPrototypeOf(c)) {
      if (Object.hasOwn(c, 'brand')) brands.push((c as unknown as { brand: string }).brand);
    }
    Object.defineProperty(this, BRANDS, { value: Object.freeze(brands) });
  }

  /** True when `value` is an error of this class (or a subclass), from any installed copy. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (typeof value !== 'object' || value === null) return false;
    const brands = (value as Record<symbol, unknown>)[BRANDS];
    return Array.isArray(brands) && brands.includes(this.brand);
  }

  /** A JSON-safe form, e.g. for logs or for an error line on a socket. */
  toJSON(): { name: string; code: C; message: string; details: ErrorDetails } {
    return { name: this.name, code: this.code, message: this.message, details: this.details };
  }
}

/** An error of `@handoff/protocol`: codec, validation, state machines, journal records. */
export class HandoffProtocolError extends HandoffError<ProtocolErrorCode> {
  static override readonly brand: string = 'HandoffProtocolError';
  override readonly name: string = 'HandoffProtocolError';

  constructor(code: ProtocolErrorCode, message: string, details: ErrorDetails = {}, options: { readonly cause?: unknown } = {}) {
    super(code, message, { details, ...options });
  }
}

/** The message of any thrown value. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Fails at compile time when a union is not exhausted, and at run time with a typed error. */
export function assertNever(value: never, what = 'value'): never {
  throw new HandoffProtocolError(
    ProtocolErrorCode.InvalidArgument,
    `unexpected ${what}: ${describe(value)}; this is a bug in the caller or in @handoff/protocol`,
  );
}

/** A short, safe description of any value for error messages (never throws). */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return `${typeof value} ${String(value)}`;
  if (value instanceof Map) return `map of ${value.size}`;
  if (Array.isArray(value)) return `array of ${value.length}`;
  if (value instanceof Uint8Array) return `binary of ${value.byteLength} bytes`;
  if (typeof value === 'object') {
    const ctor = (value as { constructor?: { name?: unknown } }).constructor;
    return typeof ctor?.name === 'string' ? `object ${ctor.name}` : 'object';
  }
  return typeof value;
}
