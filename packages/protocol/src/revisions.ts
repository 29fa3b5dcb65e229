/**
 * The rule by which a successor's advertised revisions must continue the sealed ones.
 */

/**
 * True when `advertised` continues `sealed`: the same number of shards, and no shard behind
 * its sealed revision (a successor may already have applied writes, never lost any).
 */
export function revisionsContinue(sealed: readonly number[], advertised: readonly number[]): boolean {
  if (sealed.length !== advertised.length) return false;
  return sealed.every((revision, shard) => (advertised[shard] as number) >= revision);
}

/** A one-line explanation of why `advertised` does not continue `sealed`, or undefined when it does. */
export function explainRevisionGap(sealed: readonly number[], advertised: readonly number[]): string | undefined {
  if (sealed.length !== advertised.length) {
    return `successor advertises ${advertised.length} shards, the incumbent sealed ${sealed.length}`;
  }
  const shard = sealed.findIndex((revision, i) => (advertised[i] as number) < revision);
  if (shard === -1) return undefined;
  return `shard ${shard}: successor is at revision ${advertised[shard]}, the incumbent sealed ${sealed[shard]} (acknowledged writes would be lost)`;
}
