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

function pack(app: unknown, cut: readonly CutWork[]): Uint8Array {
  try {
    return packr.pack({ v: 1, app: app ?? null, cut });
  } catch (error) {
    throw new CoreError(CoreErrorCode.InvalidArgument, `the state to hand over does not encode as msgpack (${messageOf(error)}): return plain data from seal() and give checkpoints of plain data — objects, arrays, strings, numbers, booleans, null; this incumbent serves on`);
  }
}

/**
 * The bytes to hand over, or null when there is nothing (the seal returned undefined and the
 * drain cut nothing). When the cut work makes it too large, the list is shortened to what
 * fits (one line on stderr names how many items were left out: they stay in the log); the
 * seal's own value is never shortened.
 * @throws CoreError INVALID_ARGUMENT when the value does not encode, or is over the limit by itself.
 */
export function encodeHandover(app: unknown, cut: readonly CutWork[]): Uint8Array | null {
  if (app === undefined && cut.length === 0) return null;
  let bytes = pack(app, cut);
  if (bytes.length > FieldLimits.stateMax && cut.length > 0) {
    // The most items that fit, oldest cut first (a binary search: each try encodes once).
    let fits = 0;
    let low = 0;
    let high = cut.length - 1;
    while (low <= high) {
      const mid = (low + high) >> 1;
      if (pack(app, cut.slice(0, mid)).length <= FieldLimits.stateMax) {
        fits = mid;
        low = mid + 1;
      } else high = mid - 1;
    }
    bytes = pack(app, cut.slice(0, fits));
    process.stderr.write(`handoff: the handover state is over ${FieldLimits.stateMax} bytes with every cut item: ${cut.length - fits} of ${cut.length} cut items are not handed over (the list above names them all)\n`);
  }
  if (bytes.length > FieldLimits.stateMax) {
    throw new CoreError(CoreErrorCode.InvalidArgument, `the state to hand over is ${bytes.length} bytes encoded, above the limit of ${FieldLimits.stateMax} (PROTOCOL.md §6, "Handover state"): hand over less — what is large belongs in the data directory; this incumbent serves on`);
  }
  return bytes;
}

/** A cut item as it arrived, or undefined when it is not one (an older or a foreign layout). */
function cutItemOf(value: unknown): CutWork | undefined {
  const c = value as Partial<Record<keyof CutWork, unknown>> | null;
  if (typeof c !== 'object' || c === null || typeof c.kind !== 'string' || typeof c.id !== 'number') return undefined;
  const why = c.why === 'interrupted' || c.why === 'deadline' || c.why === 'forced' ? c.why : 'deadline';
  return {
    id: c.id,
    kind: c.kind,
    description: typeof c.description === 'string' ? c.description : '',
    startedAt: typeof c.startedAt === 'number' ? c.startedAt : 0,
    interruptible: c.interruptible === true,
    why,
    resume: c.resume ?? null,
    released: c.released === true,
  };
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
      const { app, cut } = value as { app: unknown; cut: unknown[] };
      // Only well-formed items: the new version's code reads them after the commit point.
      return { state: app ?? null, cut: cut.map(cutItemOf).filter((c): c is CutWork => c !== undefined) };
    }
    process.stderr.write(`handoff: the incumbent handed over ${bytes.length} bytes of state in a layout this version does not read; starting without it\n`);
  } catch (error) {
    process.stderr.write(`handoff: the incumbent's handover state (${bytes.length} bytes) does not decode (${messageOf(error)}); starting without it\n`);
  }
  return null;
}
