/**
 * Version negotiation and capability bits.
 */
import { HandoffProtocolError, ProtocolErrorCode } from './errors.js';

/** An inclusive range of protocol versions. */
export interface VersionRange {
  readonly min: number;
  readonly max: number;
}

/**
 * The highest version both ranges contain.
 * @throws HandoffProtocolError VERSION_MISMATCH when the ranges are disjoint.
 */
export function negotiateVersion(local: VersionRange, remote: VersionRange): number {
  const low = Math.max(local.min, remote.min);
  const high = Math.min(local.max, remote.max);
  if (low > high) {
    throw new HandoffProtocolError(
      ProtocolErrorCode.VersionMismatch,
      `protocol versions do not overlap: this side speaks ${local.min}..${local.max}, the peer ${remote.min}..${remote.max}; ` +
        `upgrade ${local.max < remote.min ? 'this side (the supervisor or library)' : 'the peer'} so that both share a version`,
      { localMin: local.min, localMax: local.max, remoteMin: remote.min, remoteMax: remote.max },
    );
  }
  return high;
}

/**
 * Capability bits of v1 (a u32 bit set). A bit is in force only when both sides set it;
 * unknown bits are ignored.
 */
export const Capability = {
  /** The daemon sends SealProgress during a long seal. */
  SealProgress: 1 << 0,
  /** The successor can take over without a seal report (Begin with seal = nil): it recovers from disk. */
  RecoverFromDisk: 1 << 1,
  /** The daemon keeps a reserve copy of each listener and can accept again after a drain without help. */
  ReserveListeners: 1 << 2,
  /** The daemon accepts a Commit on its successor channel and then serves sessions on its control socket. */
  CommitToSuccessor: 1 << 3,
  /** The incumbent answers SpawnHolder: it starts a listener holder as its own child, its listeners inherited. */
  SpawnHolder: 1 << 4,
  /**
   * The daemon keeps no data directory (no lock, nothing to seal): its successor starts
   * accepting on the shared listeners before the incumbent stops, and the incumbent is
   * stopped only after the commit point (PROTOCOL.md section 7, "Overlap").
   */
  Overlap: 1 << 5,
  /**
   * The incumbent answers Reload: it swaps one of its plugins, or re-reads its own
   * configuration, in place, and reports the outcome (PROTOCOL.md section 6, "Reload").
   */
  Reload: 1 << 6,
  /**
   * The incumbent reports what its drain still waits for (DrainProgress: tracked long-lived
   * work by kind, the oldest item, the time left) while it drains (PROTOCOL.md section 6,
   * "Long-lived work").
   */
  DrainProgress: 1 << 7,
  /**
   * Idle client connections move from the incumbent to the successor instead of being closed:
   * offered with ConnOffer, their descriptors passed beside (PROTOCOL.md section 6, "Moving
   * connections"). In force only where the supervisor can pass descriptors to the daemon.
   */
  MoveConnections: 1 << 8,
} as const;

/** One named capability. */
export type CapabilityName = keyof typeof Capability;

/** The bit set of the given capabilities. */
export function capabilities(...names: readonly CapabilityName[]): number {
  return names.reduce((bits, name) => (bits | Capability[name]) >>> 0, 0);
}

/** The capabilities in force for a session: the bits both sides set. */
export function commonCapabilities(a: number, b: number): number {
  return (a & b) >>> 0;
}

/** Whether `bits` includes capability `name`. */
export function hasCapability(bits: number, name: CapabilityName): boolean {
  return (bits & Capability[name]) !== 0;
}

/** The names of the known capabilities set in `bits`. */
export function capabilityNames(bits: number): CapabilityName[] {
  return (Object.keys(Capability) as CapabilityName[]).filter((name) => hasCapability(bits, name));
}
