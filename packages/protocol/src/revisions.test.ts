import { describe, expect, it } from 'vitest';
import { explainRevisionGap, revisionsContinue } from './revisions.js';

describe('revisionsContinue', () => {
  it('accepts equal or later revisions per shard', () => {
    expect(revisionsContinue([], [])).toBe(true);
    expect(revisionsContinue([3, 7], [3, 7])).toBe(true);
    expect(revisionsContinue([3, 7], [4, 7])).toBe(true);
  });
  it('rejects a shard behind, or a different shard count, and says which', () => {
    expect(revisionsContinue([3, 7], [3, 6])).toBe(false);
    expect(explainRevisionGap([3, 7], [3, 6])).toMatch(/shard 1: successor is at revision 6, the incumbent sealed 7/);
    expect(revisionsContinue([3], [3, 0])).toBe(false);
    expect(explainRevisionGap([3], [3, 0])).toMatch(/2 shards, the incumbent sealed 1/);
    expect(explainRevisionGap([1], [1])).toBeUndefined();
  });
});
