import { describe, expect, it } from 'vitest';
import { CoreError, CoreErrorCode } from './errors.js';
import { WorkCutError, WorkTracker } from './work.js';
import type { WorkItem } from './work.js';

/** Resolves with what `promise` resolves with, or rejects when `ms` passed first (a test that hangs fails clearly). */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`${what}: not within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves with the reason of `signal` once it aborts. */
function aborted(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve) => {
    signal.addEventListener('abort', () => {
      resolve(signal.reason);
    }, { once: true });
  });
}

/** Ends `item` once it is cut, in a later turn of the event loop (as real work would after cleaning up). */
function endWhenCut(item: WorkItem, beforeEnd: () => void = () => undefined): void {
  void aborted(item.signal).then(() => {
    setImmediate(() => {
      beforeEnd();
      item.end();
    });
  });
}

describe('WorkTracker', () => {
  it('tracks items until they end, oldest first, and resolves whenIdle once none is pending', async () => {
    const tracker = new WorkTracker();
    await within(tracker.whenIdle(), 1_000, 'whenIdle with nothing pending');
    const a = tracker.start({ kind: ' job ', description: 'export of 1M keys for alice' });
    const b = tracker.start({ kind: 'stream', interruptible: true });
    expect(a.kind).toBe('job');
    expect(b.id).not.toBe(a.id);
    expect(tracker.size).toBe(2);
    expect(tracker.items()).toEqual([
      { id: a.id, kind: 'job', description: 'export of 1M keys for alice', startedAt: a.startedAt, interruptible: false },
      { id: b.id, kind: 'stream', description: '', startedAt: b.startedAt, interruptible: true },
    ]);
    const idle = tracker.whenIdle();
    a.end();
    a.end();
    expect(a.ended).toBe(true);
    expect(tracker.size).toBe(1);
    b.end();
    await within(idle, 1_000, 'whenIdle');
    expect(tracker.size).toBe(0);
    expect(tracker.items()).toEqual([]);
  });

  it('truncates descriptions to 256 characters', () => {
    const tracker = new WorkTracker();
    const item = tracker.start({ kind: 'job', description: 'x'.repeat(300) });
    expect(item.description).toHaveLength(256);
    item.describe('y'.repeat(1_000));
    expect(item.description).toBe('y'.repeat(256));
    item.describe('phase 2');
    expect(item.description).toBe('phase 2');
  });

  it('refuses a kind that is empty, blank or longer than 64 characters with one clear sentence', () => {
    const tracker = new WorkTracker();
    for (const kind of ['', '   ', 'k'.repeat(65)]) {
      let error: unknown;
      try {
        tracker.start({ kind });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(CoreError);
      expect((error as CoreError).code).toBe(CoreErrorCode.InvalidArgument);
      expect((error as CoreError).message).toMatch(/^WorkInfo\.kind must be a string of 1 to 64 characters once trimmed, got (an empty string|65 characters)$/);
    }
    expect(tracker.start({ kind: 'k'.repeat(64) }).kind).toHaveLength(64);
    expect(tracker.size).toBe(1);
  });

  it('reports progress by kind (largest count first, then by kind) and the oldest item with its age', () => {
    let clock = 1_000;
    const tracker = new WorkTracker({ now: () => clock });
    expect(tracker.progress()).toEqual({ pending: 0, byKind: [], oldest: null });
    const first = tracker.start({ kind: 'stream', description: 'tail of app.log' });
    clock = 1_200;
    tracker.start({ kind: 'job' });
    tracker.start({ kind: 'job' });
    tracker.start({ kind: 'run' });
    clock = 1_500;
    expect(tracker.progress()).toEqual({
      pending: 4,
      byKind: [
        { kind: 'job', count: 2 },
        { kind: 'run', count: 1 },
        { kind: 'stream', count: 1 },
      ],
      oldest: { id: first.id, kind: 'stream', description: 'tail of app.log', startedAt: 1_000, interruptible: false, ageMs: 500 },
    });
  });

  describe('run()', () => {
    it('ends the item when fn fulfils and returns its value', async () => {
      const tracker = new WorkTracker();
      let seen: WorkItem | undefined;
      const value = await tracker.run({ kind: 'job' }, async (item) => {
        seen = item;
        expect(tracker.size).toBe(1);
        await Promise.resolve();
        return 42;
      });
      expect(value).toBe(42);
      expect(seen?.ended).toBe(true);
      expect(tracker.size).toBe(0);
    });

    it('ends the item when fn rejects or throws, and rethrows', async () => {
      const tracker = new WorkTracker();
      const seen: WorkItem[] = [];
      await expect(
        tracker.run({ kind: 'job' }, async (item) => {
          seen.push(item);
          await Promise.resolve();
          throw new Error('boom');
        }),
      ).rejects.toThrow('boom');
      await expect(
        tracker.run({ kind: 'job' }, (item) => {
          seen.push(item);
          throw new Error('sync boom');
        }),
      ).rejects.toThrow('sync boom');
      expect(seen.map((item) => item.ended)).toEqual([true, true]);
      expect(tracker.size).toBe(0);
    });
  });

  describe('drain()', () => {
    it('resolves at once with nothing pending', async () => {
      const tracker = new WorkTracker();
      const report = await within(tracker.drain({ deadline: Date.now() + 10_000 }), 1_000, 'empty drain');
      expect(report).toMatchObject({ finished: 0, cut: [], abandoned: false });
    });

    it('tells each item that a drain started, with the deadline, and waits for an item that ends by itself', async () => {
      const tracker = new WorkTracker();
      const item = tracker.start({ kind: 'job' });
      expect(item.draining.aborted).toBe(false);
      expect(item.drainDeadline).toBeNull();
      const deadline = Date.now() + 10_000;
      void aborted(item.draining).then(() => {
        setImmediate(() => {
          item.end();
        });
      });
      const drained = tracker.drain({ deadline, cutAt: deadline - 1_000 });
      expect(tracker.draining).toBe(true);
      expect(item.draining.aborted).toBe(true);
      expect(item.draining.reason).toEqual({ deadline });
      expect(item.drainDeadline).toBe(deadline);
      const report = await within(drained, 5_000, 'drain');
      expect(report).toMatchObject({ finished: 1, cut: [], abandoned: false });
      expect(report.durationMs).toBeLessThan(9_000);
      expect(item.signal.aborted).toBe(false);
    });

    it('cuts interruptible items at once and waits for the others', async () => {
      const tracker = new WorkTracker();
      const job = tracker.start({ kind: 'job', description: 'nightly report' });
      const session = tracker.start({ kind: 'ws', description: 'session of bob', interruptible: true, resume: { room: 7 } });
      // The interruptible session ends as soon as it is cut; the job a little later.
      endWhenCut(session, () => {
        setImmediate(() => {
          job.end();
        });
      });
      const deadline = Date.now() + 10_000;
      const drained = tracker.drain({ deadline, cutAt: deadline - 1_000 });
      expect(session.signal.aborted).toBe(true);
      expect(session.signal.reason).toBeInstanceOf(WorkCutError);
      expect((session.signal.reason as WorkCutError).why).toBe('interrupted');
      expect(job.signal.aborted).toBe(false);
      const report = await within(drained, 5_000, 'drain');
      expect(report.finished).toBe(1);
      expect(report.cut).toEqual([
        { id: session.id, kind: 'ws', description: 'session of bob', startedAt: session.startedAt, interruptible: true, why: 'interrupted', resume: { room: 7 }, released: true },
      ]);
      expect(job.signal.aborted).toBe(false);
    });

    it('cuts an item still running at the cut time with a WorkCutError, and reports its last checkpoint', async () => {
      const tracker = new WorkTracker();
      const item = tracker.start({ kind: 'export', resume: { offset: 0 } });
      item.checkpoint({ offset: 500 });
      endWhenCut(item, () => {
        item.checkpoint({ offset: 900 });
      });
      const other = tracker.start({ kind: 'export' });
      endWhenCut(other);
      const deadline = Date.now() + 10_000;
      const report = await within(tracker.drain({ deadline, cutAt: Date.now() + 50, releaseGraceMs: 5_000 }), 8_000, 'drain');
      const reason = item.signal.reason as WorkCutError;
      expect(reason).toBeInstanceOf(WorkCutError);
      expect(reason).toBeInstanceOf(Error);
      expect(reason.code).toBe('HANDOFF_WORK_CUT');
      expect(reason.why).toBe('deadline');
      expect(reason.message).toBe('cut by the drain: still running at the deadline');
      expect(report.finished).toBe(0);
      expect(report.cut.map((c) => [c.id, c.why, c.resume, c.released])).toEqual([
        [item.id, 'deadline', { offset: 900 }, true],
        [other.id, 'deadline', null, true],
      ]);
      // Both released long before the grace or the deadline.
      expect(Date.now()).toBeLessThan(deadline);
    });

    it('with force, cuts every item at once, interruptible or not', async () => {
      const tracker = new WorkTracker();
      const job = tracker.start({ kind: 'job' });
      const stream = tracker.start({ kind: 'stream', interruptible: true });
      endWhenCut(job);
      endWhenCut(stream);
      const deadline = Date.now() + 10_000;
      const drained = tracker.drain({ deadline, force: true });
      expect(job.signal.aborted).toBe(true);
      expect(stream.signal.aborted).toBe(true);
      expect((job.signal.reason as WorkCutError).message).toBe('cut at once: the operator asked not to wait (--no-drain-wait)');
      const report = await within(drained, 5_000, 'forced drain');
      expect(report.finished).toBe(0);
      expect(report.cut.map((c) => [c.id, c.why, c.released])).toEqual([
        [job.id, 'forced', true],
        [stream.id, 'forced', true],
      ]);
      // Items started during a forced drain are cut at once too.
      const late = tracker.start({ kind: 'job' });
      expect(late.draining.aborted).toBe(true);
      expect((late.signal.reason as WorkCutError).why).toBe('forced');
    });

    it('reports a guard never released as released: false and still returns by the deadline', async () => {
      const tracker = new WorkTracker();
      const stuck = tracker.start({ kind: 'job', description: 'ignores its signal', resume: 'page 3' });
      const deadline = Date.now() + 400;
      const report = await within(tracker.drain({ deadline, cutAt: Date.now() + 50 }), 5_000, 'drain');
      // The default grace ends at the deadline; a timer may fire a little late on a loaded machine.
      expect(Date.now()).toBeLessThan(deadline + 1_000);
      expect(stuck.signal.aborted).toBe(true);
      expect(report.cut).toEqual([{ id: stuck.id, kind: 'job', description: 'ignores its signal', startedAt: stuck.startedAt, interruptible: false, why: 'deadline', resume: 'page 3', released: false }]);
      // It is still pending: the drain no longer waits for it, but the tracker still counts it.
      expect(tracker.size).toBe(1);
      stuck.end();
      await within(tracker.whenIdle(), 1_000, 'whenIdle');
    });

    it('stops waiting for an unreleased guard once the release grace passed', async () => {
      const tracker = new WorkTracker();
      tracker.start({ kind: 'job' });
      const deadline = Date.now() + 20_000;
      const report = await within(tracker.drain({ deadline, cutAt: Date.now() + 20, releaseGraceMs: 50 }), 10_000, 'drain');
      expect(report.cut.map((c) => c.released)).toEqual([false]);
      expect(Date.now()).toBeLessThan(deadline);
    });

    it('notifies items started during a drain at once and cuts the interruptible ones, and cuts every new item once the cut time passed', async () => {
      const tracker = new WorkTracker();
      const first = tracker.start({ kind: 'job' });
      const deadline = Date.now() + 20_000;
      const drained = tracker.drain({ deadline, cutAt: deadline - 1_000 });
      const waited = tracker.start({ kind: 'job' });
      expect(waited.draining.aborted).toBe(true);
      expect(waited.draining.reason).toEqual({ deadline });
      expect(waited.signal.aborted).toBe(false);
      const interruptible = tracker.start({ kind: 'stream', interruptible: true });
      expect(interruptible.draining.aborted).toBe(true);
      expect((interruptible.signal.reason as WorkCutError).why).toBe('interrupted');
      interruptible.end();
      first.end();
      waited.end();
      const report = await within(drained, 10_000, 'drain');
      expect(report.finished).toBe(2);
      expect(report.cut.map((c) => [c.id, c.why, c.released])).toEqual([[interruptible.id, 'interrupted', true]]);

      // A second drain, still waiting for a cut item to release when a new item starts.
      tracker.resume();
      const slow = tracker.start({ kind: 'job' });
      const cut = aborted(slow.signal);
      const second = tracker.drain({ deadline: Date.now() + 20_000, cutAt: Date.now() + 20, releaseGraceMs: 10_000 });
      await within(cut, 5_000, 'the cut');
      const late = tracker.start({ kind: 'job' });
      expect(late.draining.aborted).toBe(true);
      expect((late.signal.reason as WorkCutError).why).toBe('deadline');
      late.end();
      slow.end();
      const secondReport = await within(second, 10_000, 'second drain');
      expect(secondReport.cut.map((c) => [c.id, c.why, c.released])).toEqual([
        [slow.id, 'deadline', true],
        [late.id, 'deadline', true],
      ]);
    });

    it('is abandoned at once when its signal aborts, and resume() lets new items start un-notified', async () => {
      const tracker = new WorkTracker();
      const job = tracker.start({ kind: 'job' });
      const session = tracker.start({ kind: 'ws', interruptible: true });
      const controller = new AbortController();
      void aborted(job.draining).then(() => {
        setImmediate(() => {
          controller.abort();
        });
      });
      const deadline = Date.now() + 20_000;
      const report = await within(tracker.drain({ deadline, cutAt: deadline - 1_000, signal: controller.signal }), 10_000, 'abandoned drain');
      expect(report.abandoned).toBe(true);
      expect(report.finished).toBe(0);
      expect(report.cut.map((c) => [c.id, c.why, c.released])).toEqual([[session.id, 'interrupted', false]]);
      expect(report.durationMs).toBeLessThan(10_000);
      expect(job.signal.aborted).toBe(false);
      expect(tracker.draining).toBe(true);
      // Until resume(), new items are told a drain ran (but nothing cuts them).
      const told = tracker.start({ kind: 'job' });
      expect(told.draining.aborted).toBe(true);
      expect(told.signal.aborted).toBe(false);

      tracker.resume();
      expect(tracker.draining).toBe(false);
      const fresh = tracker.start({ kind: 'job' });
      expect(fresh.draining.aborted).toBe(false);
      expect(fresh.drainDeadline).toBeNull();
      expect(fresh.signal.aborted).toBe(false);
      // Items already told keep their aborted draining signal.
      expect(job.draining.aborted).toBe(true);
    });

    it('reports progress: the count by kind, most first, and the oldest item with its age', () => {
      const tracker = new WorkTracker();
      const oldest = tracker.start({ kind: 'job', description: 'first' });
      tracker.start({ kind: 'job' });
      tracker.start({ kind: 'stream' });
      const p = tracker.progress();
      expect(p).toEqual({
        pending: 3,
        byKind: [
          { kind: 'job', count: 2 },
          { kind: 'stream', count: 1 },
        ],
        oldest: expect.objectContaining({ id: oldest.id, kind: 'job', description: 'first' }),
      });
      expect(p.oldest?.ageMs).toBeGreaterThanOrEqual(0);
      oldest.end();
      expect(tracker.progress()).toMatchObject({ pending: 2, byKind: [{ kind: 'job', count: 1 }, { kind: 'stream', count: 1 }] });
    });

    it('reports work started after the drain returned (cut at once) with takeLateCuts, once', async () => {
      const tracker = new WorkTracker();
      await tracker.drain({ deadline: Date.now() + 1_000 });
      const late = tracker.start({ kind: 'stream', description: 'too late', resume: { at: 3 } });
      expect(late.signal.aborted).toBe(true);
      late.end();
      expect(tracker.takeLateCuts()).toEqual([expect.objectContaining({ id: late.id, kind: 'stream', why: 'deadline', resume: { at: 3 }, released: true })]);
      expect(tracker.takeLateCuts()).toEqual([]);
      tracker.resume();
      expect(tracker.start({ kind: 'job' }).signal.aborted).toBe(false);
    });

    it('refuses a second drain while one runs, and resume() during a drain', async () => {
      const tracker = new WorkTracker();
      const item = tracker.start({ kind: 'job' });
      const deadline = Date.now() + 20_000;
      const first = tracker.drain({ deadline, cutAt: deadline - 1_000 });
      await expect(tracker.drain({ deadline })).rejects.toMatchObject({ code: CoreErrorCode.WrongState });
      expect(() => {
        tracker.resume();
      }).toThrow(CoreError);
      item.end();
      expect(await within(first, 5_000, 'drain')).toMatchObject({ finished: 1, cut: [] });
    });

    it('refuses options that are not numbers', async () => {
      const tracker = new WorkTracker();
      tracker.start({ kind: 'job' });
      await expect(tracker.drain({ deadline: Number.NaN })).rejects.toMatchObject({ code: CoreErrorCode.InvalidArgument });
      await expect(tracker.drain({ deadline: Date.now() + 1_000, releaseGraceMs: -1 })).rejects.toMatchObject({ code: CoreErrorCode.InvalidArgument });
      await expect(tracker.drain({ deadline: Date.now() + 1_000, cutAt: Number.POSITIVE_INFINITY })).rejects.toMatchObject({ code: CoreErrorCode.InvalidArgument });
      expect(tracker.draining).toBe(false);
    });
  });
});
