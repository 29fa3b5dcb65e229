/**
 * The handover state of a Node daemon (PROTOCOL.md §6, "Handover state"): what the
 * incumbent's `seal` returned and the work its drain cut, encoded as one msgpack map
 * `{ v: 1, app, cut }` and carried as opaque bytes in SealComplete and Begin.
 */
import { Packr } from 'msgpackr';
import { FieldLimits } from '@handoff/protocol';
import { messageOf } from '@handoff/protocol/internal';
import { CoreError, CoreErrorCode } from './errors.js';
import type { CutWork } from './work.js';

/** What a successor's `open`/`catchUp` receives from its incumbent. */
export interface HandedOver {
  /** What the incumbent's `seal` returned (null when it returned nothing). */
  readonly state: unknown;
  /** The tracked work the incumbent's drain cut, with each item's last checkpoint (`resume`), to offer to resume it. */
  readonly cut: readonly CutWork[];
}

const packr = new Packr({ useRecords: false, structuredClone: false, moreTypes: false });

/**
 * The bytes to hand over, or null when there is nothing (the seal returned undefined and the
 * drain cut nothing).
 * @throws CoreError INVALID_ARGUMENT when the value does not encode or is over the limit.
 */
export function encodeHandover(app: unknown, cut: readonly CutWork[]): Uint8Array | null {
  if (app === undefined && cut.length === 0) return null;
  let bytes: Uint8Array;
  try {
    bytes = packr.pack({ v: 1, app: app ?? null, cut });
  } catch (error) {
    throw new CoreError(CoreErrorCode.InvalidArgument, `the state to hand over does not encode as msgpack (${messageOf(error)}): return plain data from seal() — objects, arrays, strings, numbers, booleans, null; this incumbent serves on`);
  }
  if (bytes.length > FieldLimits.stateMax) {
    throw new CoreError(CoreErrorCode.InvalidArgument, `the state to hand over is ${bytes.length} bytes encoded, above the limit of ${FieldLimits.stateMax} (PROTOCOL.md §6, "Handover state"): hand over less — what is large belongs in the data directory; this incumbent serves on`);
  }
  return bytes;
}

/**
 * What the bytes of Begin's `state` hold, or null when there are none or they are not the
 * layout above (one line on stderr: the successor starts without them, as after a crash).
 */
export function decodeHandover(bytes: Uint8Array | null): HandedOver | null {
  if (bytes === null) return null;
  try {
    const value: unknown = packr.unpack(bytes);
    if (typeof value === 'object' && value !== null && (value as { v?: unknown }).v === 1 && Array.isArray((value as { cut?: unknown }).cut)) {
      const { app, cut } = value as { app: unknown; cut: CutWork[] };
      return { state: app ?? null, cut };
    }
    process.stderr.write(`handoff: the incumbent handed over ${bytes.length} bytes of state in a layout this version does not read; starting without it\n`);
  } catch (error) {
    process.stderr.write(`handoff: the incumbent's handover state (${bytes.length} bytes) does not decode (${messageOf(error)}); starting without it\n`);
  }
  return null;
}
