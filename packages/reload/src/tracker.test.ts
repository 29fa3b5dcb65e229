import { describe, expect, it } from 'vitest';
import { InFlightTracker } from './tracker.js';

describe('InFlightTracker', () => {
  it('counts calls per key and in all, and lists only keys with calls in flight', () => {
    const tracker = new InFlightTracker<number>();
    const a = tracker.enter(1, 'apply');
    const b = tracker.enter(1, 'later');
    const c = tracker.enter(2);
    expect([tracker.count(1), tracker.count(2), tracker.count(3), tracker.count()]).toEqual([2, 1, 0, 3]);
    expect(new Set([a.id, b.id, c.id]).size).toBe(3);
    a.leave();
    c.leave();
    expect([tracker.count(1), tracker.count(2), tracker.count()]).toEqual([1, 0, 1]);
    expect(tracker.keys()).toEqual([1]);
    b.leave();
    expect(tracker.keys()).toEqual([]);
  });

  it('leaving twice (or leave then dispose) counts once', () => {
    const tracker = new InFlightTracker();
    const first = tracker.enter('v1');
    tracker.enter('v1');
    first.leave();
    first.leave();
    first[Symbol.dispose]();
    expect(tracker.count('v1')).toBe(1);
  });

  it('lists the calls in flight with their label and start, oldest first', () => {
    const tracker = new InFlightTracker();
    const before = Date.now();
    const a = tracker.enter('v1', 'apply');
    const b = tracker.enter('v1', 'later');
    tracker.enter('v1', 'gate');
    b.leave(); // out of the middle
    const entries = tracker.entries('v1');
    expect(entries.map((e) => e.label)).toEqual(['apply', 'gate']);
    expect(entries[0]).toEqual({ id: a.id, label: 'apply', startedAt: a.startedAt });
    expect(entries[0]!.startedAt).toBeGreaterThanOrEqual(before);
    expect(tracker.entries('v2')).toEqual([]);
    a.leave();
    expect(tracker.entries('v1').map((e) => e.label)).toEqual(['gate']);
    tracker.enter('v1', 'last');
    expect(tracker.entries('v1').map((e) => e.label)).toEqual(['gate', 'last']);
  });

  it('whenIdle resolves true at once for an idle key, and when the last call of a busy key leaves', async () => {
    const tracker = new InFlightTracker();
    expect(await tracker.whenIdle('v1')).toBe(true);
    const a = tracker.enter('v1');
    const b = tracker.enter('v1');
    const other = tracker.enter('v2');
    let idle: boolean | undefined;
    const waiting = tracker.whenIdle('v1').then((value) => (idle = value));
    a.leave();
    other.leave();
    await Promise.resolve();
    expect(idle).toBeUndefined();
    b.leave();
    expect(await waiting).toBe(true);
  });

  it('hold and release count a call with no guard: counted, drained, not listed', async () => {
    const tracker = new InFlightTracker<number>();
    tracker.hold(1);
    const guard = tracker.enter(1, 'later');
    expect([tracker.count(1), tracker.count()]).toEqual([2, 2]);
    expect(tracker.entries(1).map((e) => e.label)).toEqual(['later']);
    const idle = tracker.whenIdle(1);
    guard.leave();
    tracker.release(1);
    tracker.release(1); // more releases than holds do nothing
    expect(await idle).toBe(true);
    expect([tracker.count(1), tracker.count()]).toEqual([0, 0]);
  });

  it('a long life of keys: each key’s count stays right while idle keys are swept', () => {
    const tracker = new InFlightTracker<number>();
    const kept = tracker.enter(0, 'long');
    for (let key = 1; key <= 1_000; key++) {
      const guard = tracker.enter(key);
      tracker.hold(key);
      guard.leave();
      tracker.release(key);
    }
    expect(tracker.keys()).toEqual([0]);
    expect([tracker.count(0), tracker.count(500), tracker.count()]).toEqual([1, 0, 1]);
    expect(tracker.entries(0).map((e) => e.id)).toEqual([kept.id]);
    kept.leave();
    expect(tracker.count()).toBe(0);
  });

  it('whenIdle resolves false when its timeout passes first, or its signal aborts', async () => {
    const tracker = new InFlightTracker();
    const guard = tracker.enter('v1');
    expect(await tracker.whenIdle('v1', 10)).toBe(false);
    const stop = new AbortController();
    const waiting = tracker.whenIdle('v1', undefined, stop.signal);
    stop.abort();
    expect(await waiting).toBe(false);
    expect(tracker.count('v1')).toBe(1);
    // The abandoned waiters are gone: the key still drains normally.
    const later = tracker.whenIdle('v1', 60_000);
    guard.leave();
    expect(await later).toBe(true);
  });
});
