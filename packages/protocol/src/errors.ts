/**
 * Errors of the handoff protocol. Every error thrown or returned by this package is a
 * {@link HandoffProtocolError} with a stable `code`; branch on `code`, not on `instanceof`
 * (two installed copies of the package have two classes).
 */

/** Stable error codes of `@handoff/protocol`. */
export const ProtocolErrorCode = {
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
  /** The two sides' protocol version ranges do not overlap. */
  VersionMismatch: 'HANDOFF_VERSION_MISMATCH',
  /** A message or event that the receiving state machine does not allow in its state. */
  ProtocolViolation: 'HANDOFF_PROTOCOL_VIOLATION',
  /** A journal record could not be parsed or validated. */
  JournalInvalid: 'HANDOFF_JOURNAL_INVALID',
  /** An argument given to this package's API is invalid (a programming error of the caller). */
  InvalidArgument: 'HANDOFF_INVALID_ARGUMENT',
} as const;

/** One of the {@link ProtocolErrorCode} values. */
export type ProtocolErrorCode = (typeof ProtocolErrorCode)[keyof typeof ProtocolErrorCode];

const BRAND = Symbol.for('@handoff/protocol.HandoffProtocolError');

/** Extra, machine-readable facts attached to an error (field name, limits, states). */
export type ErrorDetails = Readonly<Record<string, string | number | boolean | null>>;

/**
 * The one error class of this package. `code` is stable across releases; `message` says
 * what happened, what was expected and what to do; `details` carries the facts.
 */
export class HandoffProtocolError extends Error {
  override readonly name = 'HandoffProtocolError';
  readonly code: ProtocolErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ProtocolErrorCode, message: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.details = details;
    Object.defineProperty(this, BRAND, { value: true });
  }

  /** True for a protocol error from any installed copy of this package. */
  static is(value: unknown): value is HandoffProtocolError {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }

  /** A JSON-safe form, e.g. for logs or for an error line on a socket. */
  toJSON(): { name: string; code: ProtocolErrorCode; message: string; details: ErrorDetails } {
    return { name: this.name, code: this.code, message: this.message, details: this.details };
  }
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
