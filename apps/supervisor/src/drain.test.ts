import { describe, expect, it } from 'vitest';
import { asDrainProgress, describeDrain, drainThrottle, drainWaitsFor, parseDuration } from './drain.js';

const progress = { pending: 3, kinds: ['job', 'connection'], counts: [2, 1], oldest: 'job 17: export', oldestMs: 95_000, leftMs: 45_000 };

describe('describeDrain', () => {
  it('says what the drain waits for, the oldest item with its age, and the time left', () => {
    expect(describeDrain(progress)).toBe('waiting for 2 jobs, 1 connection — oldest job 17: export (95 s) — 45 s left');
  });

  it('puts a kind in the plural unless its count is 1 or it ends in s', () => {
    expect(describeDrain({ ...progress, pending: 1, kinds: ['job'], counts: [1] })).toMatch(/^waiting for 1 job — /);
    expect(describeDrain({ ...progress, pending: 5, kinds: ['stream', 'connection'], counts: [3, 2] })).toMatch(/^waiting for 3 streams, 2 connections — /);
    expect(describeDrain({ ...progress, pending: 2, kinds: ['sms'], counts: [2] })).toMatch(/^waiting for 2 sms — /);
    expect(describeDrain({ ...progress, pending: 4, kinds: ['run'], counts: [4] })).toMatch(/^waiting for 4 runs — /);
  });

  it('leaves out an oldest item the daemon did not describe', () => {
    expect(describeDrain({ ...progress, oldest: '', oldestMs: 0 })).toBe('waiting for 2 jobs, 1 connection — 45 s left');
  });

  it('counts what the kinds do not list, shows short times in ms, and says when nothing is pending', () => {
    expect(describeDrain({ ...progress, pending: 40, oldestMs: 400, leftMs: 800 })).toBe('waiting for 2 jobs, 1 connection, 37 more — oldest job 17: export (400 ms) — 800 ms left');
    expect(describeDrain({ pending: 2, kinds: [], counts: [], oldest: '', oldestMs: 0, leftMs: 1_500 })).toBe('waiting for 2 items — 2 s left');
    expect(describeDrain({ ...progress, kinds: ['', 'job'], counts: [2, 1] })).toMatch(/^waiting for 2 items, 1 job — /);
    expect(describeDrain({ pending: 0, kinds: [], counts: [], oldest: '', oldestMs: 0, leftMs: 3_000 })).toBe('nothing pending — 3 s left');
  });
});

describe('drainThrottle', () => {
  it('shows a progress when what the drain waits for changes, and the same again only every 10 s', () => {
    let now = 0;
    const show = drainThrottle(10_000, () => now);
    expect(show(progress)).toBe(true);
    now = 1_000;
    expect(show({ ...progress, oldestMs: 96_000, leftMs: 44_000 })).toBe(false);
    now = 2_000;
    expect(show({ ...progress, pending: 2, counts: [1, 1] })).toBe(true);
    now = 11_000;
    expect(show({ ...progress, pending: 2, counts: [1, 1] })).toBe(false);
    now = 12_000;
    expect(show({ ...progress, pending: 2, counts: [1, 1], leftMs: 30_000 })).toBe(true);
  });

  it('compares what is pending, not the times', () => {
    expect(drainWaitsFor({ ...progress, oldestMs: 1, leftMs: 2 })).toBe(drainWaitsFor(progress));
  });
});

describe('asDrainProgress', () => {
  it('takes an answer line or a status drain, and nothing that lacks a field', () => {
    expect(asDrainProgress({ type: 'drain', handoffId: 'h-1', ...progress })).toEqual(progress);
    expect(asDrainProgress({ ...progress, at: 1 })).toEqual(progress);
    expect(asDrainProgress({ ...progress, kinds: 'job' })).toBeNull();
    expect(asDrainProgress({ ...progress, counts: [-1] })).toBeNull();
    expect(asDrainProgress({ ...progress, oldest: undefined })).toBeNull();
    expect(asDrainProgress(null)).toBeNull();
  });
});

describe('parseDuration', () => {
  it('takes ms, s, m, h or plain milliseconds', () => {
    expect(parseDuration('45s')).toBe(45_000);
    expect(parseDuration('2m')).toBe(120_000);
    expect(parseDuration('1500ms')).toBe(1_500);
    expect(parseDuration('1500')).toBe(1_500);
    expect(parseDuration('1.5s')).toBe(1_500);
    expect(parseDuration('1.001s')).toBe(1_001);
    expect(parseDuration('24h')).toBe(86_400_000);
  });

  it('refuses zero, too long, fractions of a millisecond and anything else', () => {
    for (const bad of ['0', '0s', '25h', '86400001', '1.5', '0.5ms', '-1s', '45 sec', '1e3', '', 's', '2 m']) expect(parseDuration(bad), bad).toBeNull();
    expect(parseDuration('2m', 60_000)).toBeNull();
  });
});
