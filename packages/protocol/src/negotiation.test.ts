import { describe, expect, it } from 'vitest';
import { Capability, capabilities, capabilityNames, commonCapabilities, hasCapability, negotiateVersion } from './negotiation.js';

describe('negotiateVersion', () => {
  it('picks the highest common version', () => {
    expect(negotiateVersion({ min: 1, max: 3 }, { min: 2, max: 5 })).toBe(3);
    expect(negotiateVersion({ min: 1, max: 1 }, { min: 1, max: 1 })).toBe(1);
    expect(negotiateVersion({ min: 4, max: 9 }, { min: 1, max: 4 })).toBe(4);
  });

  it('fails with VERSION_MISMATCH naming both ranges and the side to upgrade', () => {
    expect(() => negotiateVersion({ min: 1, max: 1 }, { min: 2, max: 3 })).toThrow(
      expect.objectContaining({ code: 'HANDOFF_VERSION_MISMATCH', message: expect.stringMatching(/1\.\.1.*2\.\.3.*upgrade this side/) }),
    );
    expect(() => negotiateVersion({ min: 3, max: 4 }, { min: 1, max: 2 })).toThrow(expect.objectContaining({ message: expect.stringMatching(/upgrade the peer/) }));
  });
});

describe('capabilities', () => {
  it('builds, intersects and names bit sets', () => {
    const mine = capabilities('SealProgress', 'RecoverFromDisk');
    expect(mine).toBe(Capability.SealProgress | Capability.RecoverFromDisk);
    const theirs = capabilities('RecoverFromDisk', 'ReserveListeners') | 0x8000_0000;
    const both = commonCapabilities(mine, theirs);
    expect(capabilityNames(both)).toEqual(['RecoverFromDisk']);
    expect(hasCapability(both, 'SealProgress')).toBe(false);
    expect(commonCapabilities(0xffff_ffff, 0x8000_0000)).toBe(0x8000_0000);
  });
});
