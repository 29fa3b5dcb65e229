/**
 * Frames of protocol v1: `u32 length | u16 version | msgpack payload`, big-endian.
 * `length` counts the bytes after itself (the version and the payload).
 *
 * {@link encodeFrame} validates a message and frames it; {@link FrameDecoder} turns any split
 * of a byte stream into frames, checking a frame's length against its maximum before it
 * buffers the body. Neither throws anything but {@link HandoffProtocolError}.
 */
import { Unpackr } from 'msgpackr';
import { HandoffProtocolError, ProtocolErrorCode, describe } from './errors.js';
import { PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, parseMessage, toWire, utf8Length } from './messages.js';
import type { Direction, Message, MessageOf } from './messages.js';

/** Bytes of the length field plus the version field. */
export const FRAME_HEADER_BYTES = 6;
/** Default largest value of a frame's length field: 1 MiB. */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

const unpackr = new Unpackr({
  useRecords: false,
  mapsAsObjects: false,
  // 'auto': a 64-bit integer decodes to a number when it is safe, else to a BigInt (which
  // validation rejects), never to a silently rounded number. Supported at run time since
  // msgpackr 1.9, missing from its type declarations.
  int64AsType: 'auto' as 'number',
  structuredClone: false,
  moreTypes: false,
});

/** Options of {@link encodeFrame}. */
export interface EncodeOptions {
  /** The protocol version written in the header (the negotiated one). Default 1. */
  readonly version?: number;
  /** Largest value of the length field. Default {@link DEFAULT_MAX_FRAME_BYTES}. */
  readonly maxFrameBytes?: number;
}

/**
 * The canonical msgpack encoding of PROTOCOL.md section 4, written here rather than left to a
 * library's choices: nil, bool, integers in the shortest form of their family (a non-negative
 * integer as positive fixint or uint 8/16/32/64, a negative one as negative fixint or int
 * 8/16/32/64), UTF-8 str, bin (a Uint8Array: the fields that hold bytes), array and map
 * (string keys, in insertion order) in their shortest form. Nothing else: no float or ext. Validation has run before, so every number here
 * is a safe integer.
 */
class CanonicalWriter {
  #bytes = new Uint8Array(256);
  #view = new DataView(this.#bytes.buffer);
  #at = 0;

  #room(n: number): void {
    if (this.#at + n <= this.#bytes.length) return;
    const grown = new Uint8Array(Math.max(this.#bytes.length * 2, this.#at + n));
    grown.set(this.#bytes.subarray(0, this.#at));
    this.#bytes = grown;
    this.#view = new DataView(grown.buffer);
  }

  #head(tag: number, width: 0 | 1 | 2 | 4 | 8, n: number): void {
    this.#room(1 + width);
    this.#bytes[this.#at++] = tag;
    if (width === 1) this.#view.setUint8(this.#at, n);
    else if (width === 2) this.#view.setUint16(this.#at, n);
    else if (width === 4) this.#view.setUint32(this.#at, n);
    else if (width === 8) this.#view.setBigUint64(this.#at, BigInt.asUintN(64, BigInt(n)));
    this.#at += width;
  }

  /** A length-prefixed family: fix form below `fixMax`, then 8 (if `tag8` ≥ 0), 16 and 32 bits. */
  #sized(n: number, fix: number, fixMax: number, tag8: number, tag16: number): void {
    if (n <= fixMax) this.#head(fix | n, 0, 0);
    else if (tag8 >= 0 && n <= 0xff) this.#head(tag8, 1, n);
    else if (n <= 0xffff) this.#head(tag16, 2, n);
    else this.#head(tag16 + 1, 4, n);
  }

  write(value: unknown): void {
    if (value === null) this.#head(0xc0, 0, 0);
    else if (value === false) this.#head(0xc2, 0, 0);
    else if (value === true) this.#head(0xc3, 0, 0);
    else if (typeof value === 'number') {
      if (!Number.isSafeInteger(value)) throw new HandoffProtocolError(ProtocolErrorCode.InvalidArgument, `${String(value)} is not an integer: the protocol has no floats`);
      if (value >= 0) {
        if (value <= 0x7f) this.#head(value, 0, 0);
        else if (value <= 0xff) this.#head(0xcc, 1, value);
        else if (value <= 0xffff) this.#head(0xcd, 2, value);
        else if (value <= 0xffff_ffff) this.#head(0xce, 4, value);
        else this.#head(0xcf, 8, value);
      } else if (value >= -32) this.#head(value & 0xff, 0, 0);
      else if (value >= -0x80) this.#head(0xd0, 1, value & 0xff);
      else if (value >= -0x8000) this.#head(0xd1, 2, value & 0xffff);
      else if (value >= -0x8000_0000) this.#head(0xd2, 4, value >>> 0);
      else this.#head(0xd3, 8, value);
    } else if (typeof value === 'string') {
      this.#utf8(value);
    } else if (value instanceof Uint8Array) {
      // bin 8, 16, 32: the shortest (bin has no fix form).
      this.#sized(value.length, 0, -1, 0xc4, 0xc5);
      this.#room(value.length);
      this.#bytes.set(value, this.#at);
      this.#at += value.length;
    } else if (Array.isArray(value)) {
      this.#sized(value.length, 0x90, 15, -1, 0xdc);
      for (const item of value) this.write(item);
    } else if (typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
      const entries = Object.entries(value);
      this.#sized(entries.length, 0x80, 15, -1, 0xde);
      for (const [k, v] of entries) {
        this.write(k);
        this.write(v);
      }
    } else {
      // undefined (a field left out), a Map, a Buffer, a Date…: the protocol has none of them.
      throw new HandoffProtocolError(ProtocolErrorCode.InvalidArgument, `${value === undefined ? 'undefined' : typeof value === 'object' ? `a ${Object.prototype.toString.call(value).slice(8, -1)}` : `a ${typeof value}`} cannot be encoded in the protocol`);
    }
  }

  bytes(): Uint8Array {
    return this.#bytes.subarray(0, this.#at);
  }

  /** A str, UTF-8 by hand (the package runs without any runtime's TextEncoder types); a lone surrogate becomes U+FFFD, as TextEncoder does. */
  #utf8(s: string): void {
    const n = utf8Length(s);
    this.#sized(n, 0xa0, 31, 0xd9, 0xda);
    this.#room(n);
    const b = this.#bytes;
    for (const ch of s) {
      let cp = ch.codePointAt(0) as number;
      if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
      if (cp < 0x80) b[this.#at++] = cp;
      else if (cp < 0x800) {
        b[this.#at++] = 0xc0 | (cp >> 6);
        b[this.#at++] = 0x80 | (cp & 0x3f);
      } else if (cp < 0x10000) {
        b[this.#at++] = 0xe0 | (cp >> 12);
        b[this.#at++] = 0x80 | ((cp >> 6) & 0x3f);
        b[this.#at++] = 0x80 | (cp & 0x3f);
      } else {
        b[this.#at++] = 0xf0 | (cp >> 18);
        b[this.#at++] = 0x80 | ((cp >> 12) & 0x3f);
        b[this.#at++] = 0x80 | ((cp >> 6) & 0x3f);
        b[this.#at++] = 0x80 | (cp & 0x3f);
      }
    }
  }
}

/** The canonical msgpack bytes of `value` (see {@link CanonicalWriter}). */
export function encodeCanonical(value: unknown): Uint8Array {
  const writer = new CanonicalWriter();
  writer.write(value);
  return writer.bytes();
}

/**
 * Validates `message` for `direction` and returns its frame.
 * @throws HandoffProtocolError INVALID_ARGUMENT (invalid message or version), FRAME_TOO_LARGE.
 */
export function encodeFrame(message: Message, direction: Direction, options: EncodeOptions = {}): Uint8Array {
  const version = options.version ?? PROTOCOL_VERSION_MAX;
  const max = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (!Number.isInteger(version) || version < 1 || version > 0xffff) {
    throw new HandoffProtocolError(ProtocolErrorCode.InvalidArgument, `frame version ${describe(version)} is not a u16 above 0`);
  }
  const payload = encodeCanonical(toWire(message, direction));
  const length = 2 + payload.byteLength;
  if (length > max) {
    throw new HandoffProtocolError(
      ProtocolErrorCode.FrameTooLarge,
      `${message.type} encodes to ${length} bytes, above the frame limit of ${max}; send less data or raise maxFrameBytes on both sides`,
      { length, max },
    );
  }
  const frame = new Uint8Array(4 + length);
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  view.setUint32(0, length);
  view.setUint16(4, version);
  frame.set(payload, FRAME_HEADER_BYTES);
  return frame;
}

/** Options of {@link FrameDecoder}. */
export interface DecoderOptions<D extends Direction> {
  /** The direction of the messages this decoder receives. */
  readonly direction: D;
  /** Largest accepted value of a frame's length field. Default {@link DEFAULT_MAX_FRAME_BYTES}. */
  readonly maxFrameBytes?: number;
  /** Frame versions accepted. Default this implementation's range. */
  readonly minVersion?: number;
  readonly maxVersion?: number;
}

/** One decoded frame, or why a frame could not be decoded. */
export type DecodeResult<D extends Direction> =
  | { readonly ok: true; readonly version: number; readonly message: MessageOf<D>; readonly frameBytes: number }
  | {
      readonly ok: false;
      readonly error: HandoffProtocolError;
      /**
       * True when the stream itself is broken (bad length, truncation): no further frame can
       * be read and the connection must be closed. False when only this frame's payload was
       * bad; framing is intact, but a peer that sends it is not speaking v1 and the session
       * should end.
       */
      readonly fatal: boolean;
    };

/** Lifecycle of a {@link FrameDecoder}: `open` accepts bytes; `failed` after a fatal error; `ended` after {@link FrameDecoder.end}. */
export type DecoderState = 'open' | 'failed' | 'ended';

/**
 * Incremental, bounded decoder: `push` any chunk, get the frames it completes.
 * Never throws; errors are results. After a fatal error every later `push` returns that error again.
 */
export class FrameDecoder<D extends Direction> {
  readonly direction: D;
  readonly maxFrameBytes: number;
  readonly #minVersion: number;
  readonly #maxVersion: number;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #state: DecoderState = 'open';
  #fatal: HandoffProtocolError | undefined;

  constructor(options: DecoderOptions<D>) {
    const max = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (!Number.isSafeInteger(max) || max < 2 || max > 0xffff_ffff) {
      throw new HandoffProtocolError(ProtocolErrorCode.InvalidArgument, `maxFrameBytes must be an integer from 2 to 2^32-1, got ${describe(max)}`);
    }
    this.direction = options.direction;
    this.maxFrameBytes = max;
    this.#minVersion = options.minVersion ?? PROTOCOL_VERSION_MIN;
    this.#maxVersion = options.maxVersion ?? PROTOCOL_VERSION_MAX;
  }

  /** The decoder's lifecycle state. */
  get state(): DecoderState {
    return this.#state;
  }

  /** Bytes held waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** Feeds bytes; returns the frames (and per-frame errors) they complete, in order. */
  push(chunk: Uint8Array): DecodeResult<D>[] {
    if (this.#state === 'failed') return [this.#fatalResult()];
    if (this.#state === 'ended') {
      return [{ ok: false, fatal: true, error: new HandoffProtocolError(ProtocolErrorCode.InvalidArgument, 'push() after end(): the decoder is closed; create a new one per connection') }];
    }
    if (!(chunk instanceof Uint8Array)) {
      return [{ ok: false, fatal: false, error: new HandoffProtocolError(ProtocolErrorCode.InvalidArgument, `push() takes a Uint8Array, got ${describe(chunk)}`) }];
    }
    if (chunk.byteLength > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.byteLength;
    }
    const results: DecodeResult<D>[] = [];
    for (;;) {
      if (this.#buffered < 4) return results;
      const length = this.#peekUint32();
      if (length > this.maxFrameBytes) {
        this.#fail(
          new HandoffProtocolError(
            ProtocolErrorCode.FrameTooLarge,
            `frame of ${length} bytes announced, above the limit of ${this.maxFrameBytes}; the peer is not speaking protocol v1 or needs a larger maxFrameBytes`,
            { length, max: this.maxFrameBytes },
          ),
        );
        results.push(this.#fatalResult());
        return results;
      }
      if (length < 2) {
        this.#fail(new HandoffProtocolError(ProtocolErrorCode.FrameInvalid, `frame length ${length} cannot hold the 2-byte version field`, { length }));
        results.push(this.#fatalResult());
        return results;
      }
      if (this.#buffered < 4 + length) return results;
      const frame = this.#take(4 + length);
      results.push(this.#decodeFrame(frame, length));
    }
  }

  /**
   * Declares the end of the stream. Returns a fatal FRAME_TRUNCATED result when bytes of an
   * unfinished frame remain, else nothing.
   */
  end(): DecodeResult<D>[] {
    if (this.#state === 'failed') return [];
    this.#state = 'ended';
    if (this.#buffered === 0) return [];
    const held = this.#buffered;
    this.#chunks = [];
    this.#buffered = 0;
    return [
      {
        ok: false,
        fatal: true,
        error: new HandoffProtocolError(ProtocolErrorCode.FrameTruncated, `stream ended inside a frame (${held} bytes held); the peer closed or crashed mid-message`, { held }),
      },
    ];
  }

  #decodeFrame(frame: Uint8Array, length: number): DecodeResult<D> {
    const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    const version = view.getUint16(4);
    if (version < this.#minVersion || version > this.#maxVersion) {
      return {
        ok: false,
        fatal: false,
        error: new HandoffProtocolError(
          ProtocolErrorCode.UnsupportedVersion,
          `frame version ${version} is outside the supported range ${this.#minVersion}..${this.#maxVersion}; upgrade the older side`,
          { version, min: this.#minVersion, max: this.#maxVersion },
        ),
      };
    }
    let payload: unknown;
    try {
      payload = unpackr.unpack(frame.subarray(FRAME_HEADER_BYTES));
    } catch (cause) {
      const why = cause instanceof Error ? cause.message.slice(0, 200) : describe(cause);
      return {
        ok: false,
        fatal: false,
        error: new HandoffProtocolError(ProtocolErrorCode.MalformedPayload, `payload is not valid msgpack: ${why}`, { length }, { cause }),
      };
    }
    try {
      return { ok: true, version, message: parseMessage(payload, this.direction), frameBytes: 4 + length };
    } catch (error) {
      if (error instanceof HandoffProtocolError) return { ok: false, fatal: false, error };
      return {
        ok: false,
        fatal: false,
        error: new HandoffProtocolError(ProtocolErrorCode.MalformedPayload, `payload could not be read: ${describe(error)}`, {}, { cause: error }),
      };
    }
  }

  #fail(error: HandoffProtocolError): void {
    this.#state = 'failed';
    this.#fatal = error;
    this.#chunks = [];
    this.#buffered = 0;
  }

  #fatalResult(): DecodeResult<D> {
    return { ok: false, fatal: true, error: this.#fatal as HandoffProtocolError };
  }

  #peekUint32(): number {
    let value = 0;
    let need = 4;
    for (const chunk of this.#chunks) {
      for (let i = 0; i < chunk.byteLength && need > 0; i++, need--) value = value * 256 + (chunk[i] as number);
      if (need === 0) break;
    }
    return value;
  }

  /** Removes and returns the first `n` buffered bytes, copying only when they span chunks. */
  #take(n: number): Uint8Array {
    const first = this.#chunks[0] as Uint8Array;
    let out: Uint8Array;
    if (first.byteLength >= n) {
      out = first.subarray(0, n);
      if (first.byteLength === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      out = new Uint8Array(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.#chunks[0] as Uint8Array;
        const use = Math.min(chunk.byteLength, n - filled);
        out.set(chunk.subarray(0, use), filled);
        filled += use;
        if (use === chunk.byteLength) this.#chunks.shift();
        else this.#chunks[0] = chunk.subarray(use);
      }
    }
    this.#buffered -= n;
    return out;
  }
}
