/**
 * Model-based test: the four real state machines (the supervisor's lifecycle with its
 * handoff machine, the incumbent, the successor), each in the product's MachineDriver on a
 * virtual clock, talking through the real codec, in random interleavings with hook
 * completions, timer firings, process-exit notices and SIGKILLs of any process at any step —
 * before, during and after the handoff, the daemon the supervisor restarted included. After
 * every step no process writes without the lock; at the end exactly one daemon serves and
 * holds the lock, the supervisor names it as the serving daemon, and no acknowledged write
 * is lost.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lifecycleTransition } from '../src/lifecycle-machine.js';
import type { LifecycleEvent, LifecycleState } from '../src/lifecycle-machine.js';
import { simulateHandoff } from '../src/simulation.js';
import type { SimCrash, SimFaults, SimOptions, SimResult, SimRole } from '../src/simulation.js';

function check(result: SimResult, options: SimOptions): void {
  if (result.problems.length > 0) {
    throw new Error(`invariants broken: ${result.problems.join('; ')}\noptions: ${JSON.stringify(options)}\ntrace:\n${result.trace.join('\n')}`);
  }
}

const faultsArb: fc.Arbitrary<SimFaults> = fc.oneof(
  { weight: 6, arbitrary: fc.constant({}) },
  fc.constant({ sealFails: true }),
  fc.constant({ drainFails: true }),
  fc.constant({ successorUnhealthy: true }),
  fc.constant({ successorStale: true }),
  fc.constant({ successorVersions: { min: 2, max: 3 } }),
  fc.constant({ successorNoRecovery: true }),
);
/** The steps of a run with no fault, to quiescence (kills beyond them hit a settled system). */
const HAPPY = simulateHandoff({ writeEvery: 2 });
const HAPPY_STEPS = simulateHandoff().steps;
/** When a crash strikes: at a step, or right after any event of a faultless run (the crash points of the model). */
const when = fc.oneof(fc.record({ atStep: fc.nat(3 * HAPPY.steps) }), fc.record({ afterLine: fc.constantFrom(...HAPPY.trace) }));
/** Who notices a death first is the scheduler's: a few arbitrary picks right after it. */
const crashOf = (roles: fc.Arbitrary<SimRole>): fc.Arbitrary<SimCrash> =>
  fc.tuple(roles, when, fc.array(fc.nat(8), { maxLength: 3 })).map(([role, w, then]) => ({ role, ...w, then }));
/** Up to two daemon deaths, or the supervisor's alone (a daemon dying with it would wait for a restarted supervisor: the crash matrix's part). */
const crashesArb: fc.Arbitrary<SimCrash[]> = fc.oneof(
  fc.array(crashOf(fc.constantFrom('incumbent', 'successor', 'restarted')), { maxLength: 2 }),
  crashOf(fc.constant('supervisor')).map((c) => [c]),
);
/** Scheduler choices: the default order now and then, an arbitrary enabled action otherwise. */
const choicesArb = fc.array(fc.option(fc.nat(), { nil: undefined, freq: 3 }), { maxLength: 400 });

describe('model: four machines, random interleavings and crashes', () => {
  it('commits when nothing goes wrong', () => {
    const r = simulateHandoff();
    check(r, {});
    expect(r.outcome).toMatchObject({ kind: 'committed', committed: true });
    expect(r.serving).toEqual([{ role: 'successor', holdsLock: true }]);
    expect(r.lifecycle).toEqual({ phase: 'serving', restarts: 0 });
    // The incumbent's idle connections moved: the successor reads every one.
    expect(r.connections).toEqual([['successor'], ['successor']]);
  });

  it('keeps one writer, one server, a truthful supervisor and every acknowledged write in any interleaving', () => {
    const seen = { committed: 0, promoted: 0, rolledBack: 0, coldStart: 0, unfinished: 0, restarted: 0, supervisorCrash: 0, incumbentCrash: 0, successorCrash: 0, restartedCrash: 0, deathAfterCommit: 0 };
    fc.assert(
      fc.property(choicesArb, crashesArb, faultsArb, (choices, crashes, faults) => {
        const options: SimOptions = { choices, faults, crashes };
        const r = simulateHandoff(options);
        check(r, options);
        if (r.outcome) seen[r.outcome.kind] += 1;
        else seen.unfinished += 1;
        if ((r.lifecycle?.restarts ?? 0) > 0) seen.restarted += 1;
        for (const role of r.crashed) seen[`${role}Crash`] += 1;
        if (r.outcome?.committed && r.crashed.includes('successor')) seen.deathAfterCommit += 1;
      }),
      { numRuns: Number(process.env.HANDOFF_MODEL_RUNS ?? 4000) },
    );
    // The property must have exercised every ending and every kind of death, or it proves little.
    for (const [what, count] of Object.entries(seen)) expect(count, `${what} never happened: ${JSON.stringify(seen)}`).toBeGreaterThan(0);
  });

  for (const role of ['supervisor', 'incumbent', 'successor'] as const) {
    it(`converges when the ${role} is killed at any step, before, during or after the handoff`, () => {
      for (let atStep = 0; atStep <= HAPPY_STEPS + 2; atStep++) {
        for (const faults of [{}, { sealFails: true }, { successorStale: true }] as SimFaults[]) {
          const options: SimOptions = { crashes: [{ role, atStep }], faults, writeEvery: 2 };
          check(simulateHandoff(options), options);
        }
      }
    });
  }

  it('converges when a daemon is killed at every crash point, whichever process notices first', () => {
    for (const options of everyCrashPoint()) check(simulateHandoff(options), options);
  });

  it('restarts the committed program when the new daemon dies at any step after the commit point, and again when the restarted one dies', () => {
    let afterCommit = 0;
    let restartedDied = 0;
    for (let atStep = 0; atStep <= 2 * HAPPY_STEPS + 4; atStep++) {
      const options: SimOptions = { crashes: [{ role: 'successor', atStep }, { role: 'restarted', atStep: 3 * HAPPY_STEPS + 40 }], writeEvery: 2 };
      const r = simulateHandoff(options);
      check(r, options);
      if (r.outcome?.committed && r.crashed.includes('successor')) {
        afterCommit += 1;
        if (r.crashed.includes('restarted')) restartedDied += 1;
        expect(r.serving, JSON.stringify(options)).toEqual([{ role: 'restarted', holdsLock: true }]);
        expect(r.lifecycle?.restarts).toBe(r.crashed.length);
      }
    }
    expect(afterCommit).toBeGreaterThan(3);
    expect(restartedDied, 'the restarted daemon was killed in some runs').toBeGreaterThan(3);
  });

  it('rolls back with the incumbent serving for every fault of the successor or the seal', () => {
    const cases: [SimFaults, string][] = [
      [{ sealFails: true }, 'HANDOFF_SEAL_FAILED'],
      [{ drainFails: true }, 'HANDOFF_SEAL_FAILED'],
      [{ successorUnhealthy: true }, 'HANDOFF_SUCCESSOR_UNHEALTHY'],
      [{ successorStale: true }, 'HANDOFF_REVISIONS_DIVERGED'],
      [{ successorVersions: { min: 2, max: 3 } }, 'HANDOFF_VERSION_MISMATCH'],
    ];
    for (const [faults, code] of cases) {
      const r = simulateHandoff({ faults });
      check(r, { faults });
      expect(r.outcome, JSON.stringify(faults)).toMatchObject({ kind: 'rolledBack', code });
      expect(r.serving).toEqual([{ role: 'incumbent', holdsLock: true }]);
      // Offered or not, every connection is the incumbent's again.
      expect(r.connections, JSON.stringify(faults)).toEqual([['incumbent'], ['incumbent']]);
    }
  });

  it('catches a successor whose catch-up after its preload misses the tail written meanwhile (revision continuity)', () => {
    const options: SimOptions = { faults: { successorMissesTail: true }, writeEvery: 2 };
    const r = simulateHandoff(options);
    check(r, options);
    expect(r.outcome).toMatchObject({ kind: 'rolledBack', code: 'HANDOFF_REVISIONS_DIVERGED' });
    expect(r.serving).toEqual([{ role: 'incumbent', holdsLock: true }]);
  });

  it('catches a lifecycle that loses track of a successor dying after the commit point (the check is not vacuous)', () => {
    // The supervisor's bug before the lifecycle machine: the successor's death between the
    // commit point and the supervisor adopting it as the serving daemon went unnoticed.
    const forgetful = (state: LifecycleState, event: LifecycleEvent) =>
      state.phase === 'handingOff' && event.type === 'daemonExited' && event.pid === state.handoff?.successorPid ? { state, effects: [] } : lifecycleTransition(state, event);
    const broken = everyCrashPoint()
      .map((options) => simulateHandoff({ ...options, lifecycleTransition: forgetful }).problems.join('; '))
      .filter((p) => p !== '');
    expect(broken.length).toBeGreaterThan(0);
    expect(broken.join('\n')).toMatch(/expected exactly one serving daemon, found 0|reports pid \d+ as serving/);
  });
});

describe('model: overlap handoffs of a daemon without a data directory', () => {
  const OVERLAP = simulateHandoff({ stateless: true });
  const overlapWhen = fc.oneof(fc.record({ atStep: fc.nat(3 * OVERLAP.steps) }), fc.record({ afterLine: fc.constantFrom(...OVERLAP.trace) }));
  const overlapCrash = (roles: fc.Arbitrary<SimRole>): fc.Arbitrary<SimCrash> =>
    fc.tuple(roles, overlapWhen, fc.array(fc.nat(8), { maxLength: 3 })).map(([role, w, then]) => ({ role, ...w, then }));
  const overlapFaults: fc.Arbitrary<SimFaults> = fc.oneof(
    { weight: 6, arbitrary: fc.constant({}) },
    fc.constant({ successorUnhealthy: true }),
    fc.constant({ successorNoOverlap: true }),
    fc.constant({ successorVersions: { min: 2, max: 3 } }),
  );

  it('commits with a daemon accepting at every step: the successor listens before the incumbent stops, nothing drains or seals first', () => {
    check(OVERLAP, { stateless: true });
    expect(OVERLAP.outcome).toMatchObject({ kind: 'committed', committed: true });
    expect(OVERLAP.serving.map((s) => s.role)).toEqual(['successor']);
    expect(OVERLAP.lifecycle).toEqual({ phase: 'serving', restarts: 0 });
    const trace = OVERLAP.trace.join('\n');
    expect(trace).not.toMatch(/PrepareHandoff|SealRequest/);
    // The commit point comes before the old incumbent stops.
    expect(OVERLAP.trace.findIndex((l) => l.startsWith('handoff finished: committed'))).toBeLessThan(OVERLAP.trace.findIndex((l) => l.startsWith('incumbent dies')));
  });

  it('falls back to the sealed order when the successor does not announce Overlap', () => {
    const r = simulateHandoff({ stateless: true, faults: { successorNoOverlap: true } });
    check(r, { stateless: true });
    expect(r.outcome).toMatchObject({ kind: 'committed' });
    expect(r.trace.join('\n')).toMatch(/PrepareHandoff/);
  });

  it('keeps one server, a truthful supervisor and a daemon always accepting in any interleaving, fault and crash', () => {
    const seen = { committed: 0, rolledBack: 0, supervisorCrash: 0, incumbentCrash: 0, successorCrash: 0 };
    fc.assert(
      fc.property(choicesArb, fc.oneof(fc.array(overlapCrash(fc.constantFrom('incumbent', 'successor', 'restarted')), { maxLength: 2 }), overlapCrash(fc.constant('supervisor')).map((c) => [c])), overlapFaults, (choices, crashes, faults) => {
        const options: SimOptions = { stateless: true, choices, faults, crashes };
        const r = simulateHandoff(options);
        check(r, options);
        if (r.outcome?.kind === 'committed' || r.outcome?.kind === 'rolledBack') seen[r.outcome.kind] += 1;
        for (const role of r.crashed) if (role !== 'restarted') seen[`${role}Crash`] += 1;
      }),
      { numRuns: Number(process.env.HANDOFF_MODEL_RUNS ?? 4000) / 2 },
    );
    for (const [what, count] of Object.entries(seen)) expect(count, `${what} never happened: ${JSON.stringify(seen)}`).toBeGreaterThan(0);
  });

  for (const role of ['supervisor', 'incumbent', 'successor'] as const) {
    it(`converges when the ${role} is killed at any step of an overlap handoff`, () => {
      for (let atStep = 0; atStep <= OVERLAP.steps + 2; atStep++) {
        for (const faults of [{}, { successorUnhealthy: true }] as SimFaults[]) {
          const options: SimOptions = { stateless: true, crashes: [{ role, atStep }], faults };
          check(simulateHandoff(options), options);
        }
      }
    });
  }
});

/**
 * Every crash point of a faultless run (each line of its trace) for each daemon, with each
 * of the next few enabled actions taken first: e.g. the supervisor noticing the successor's
 * death before or after it reads the successor's Ready.
 */
function everyCrashPoint(): SimOptions[] {
  const all: SimOptions[] = [];
  for (const afterLine of new Set(HAPPY.trace)) {
    for (const role of ['incumbent', 'successor'] as const) {
      for (let first = 0; first < 6; first++) all.push({ crashes: [{ role, afterLine, then: [first] }], writeEvery: 2 });
    }
  }
  return all;
}
