/**
 * The harness of the exhaustive (state × event) tables of the three machine tests.
 *
 * A table has one row per representative state and one whitespace-separated cell per event
 * (`|` separators are ignored). A cell is `=` (stays in its phase, no violation), `!` (a
 * violation that leaves the phase), `!phase` (a violation the machine handles by moving to
 * `phase`), or a phase name (a normal transition).
 */
import { describe, expect, it } from 'vitest';
import { HandoffProtocolError } from './errors.js';

interface Result<S> {
  readonly state: S;
  readonly effects: readonly unknown[];
  readonly violation?: HandoffProtocolError;
}

/** Feeds `keys` of `events` in order from `initial`; every step must be free of violations. */
export function reach<S, E>(initial: S, transition: (s: S, e: E) => Result<S>, events: Readonly<Record<string, E>>, keys: readonly string[]): S {
  let state = initial;
  for (const key of keys) {
    const r = transition(state, events[key] as E);
    expect(r.violation, `reaching a state via ${keys.join(' ')}: ${key}`).toBeUndefined();
    state = r.state;
  }
  return state;
}

export interface TableSpec<S extends { readonly phase: string }, E, R extends Result<S>> {
  readonly machine: string;
  /** Every phase of the machine: the rows must reach them all. */
  readonly phases: readonly string[];
  /** Row name (`phase` or `phase/variant`) → a state in that phase. */
  readonly states: Readonly<Record<string, S>>;
  /** Column name → event; the columns of the table, in order. */
  readonly events: Readonly<Record<string, E>>;
  readonly table: Readonly<Record<string, string>>;
  readonly transition: (state: S, event: E) => R;
  /** Checks the machine's reaction to a violation. */
  readonly onViolation: (result: R, before: S) => void;
  /** Checks that an ignored event did nothing visible. */
  readonly onIgnored?: (result: R, column: string) => void;
}

/** Declares one test per (row, column) pair, plus one that the table is complete. */
export function describeTable<S extends { readonly phase: string }, E, R extends Result<S>>(spec: TableSpec<S, E, R>): void {
  const columns = Object.keys(spec.events);
  const cellsOf = (row: string): string[] => (spec.table[row] ?? '').split(/\s+/).filter((t) => t !== '|' && t !== '');

  describe(`${spec.machine} machine: every (state, event) pair`, () => {
    it('has a row reaching every phase and a cell for every event', () => {
      expect(new Set(Object.values(spec.states).map((s) => s.phase))).toEqual(new Set(spec.phases));
      for (const [row, state] of Object.entries(spec.states)) expect(row.split('/')[0]).toBe(state.phase);
      expect(Object.keys(spec.table).sort()).toEqual(Object.keys(spec.states).sort());
      for (const row of Object.keys(spec.table)) expect(cellsOf(row), row).toHaveLength(columns.length);
    });

    for (const [row, state] of Object.entries(spec.states)) {
      const cells = cellsOf(row);
      for (const [i, column] of columns.entries()) {
        const expected = cells[i] ?? '(missing)';
        it(`${row} + ${column} -> ${expected}`, () => {
          const r = spec.transition(state, spec.events[column] as E);
          if (expected.startsWith('!')) {
            expect(r.violation instanceof HandoffProtocolError, 'a typed violation').toBe(true);
            expect(r.violation?.code).toBe('HANDOFF_PROTOCOL_VIOLATION');
            expect(r.state.phase).toBe(expected.slice(1) || state.phase);
            spec.onViolation(r, state);
          } else {
            expect(r.violation, r.violation?.message).toBeUndefined();
            expect(r.state.phase).toBe(expected === '=' ? state.phase : expected);
            if (expected === '=') spec.onIgnored?.(r, column);
          }
        });
      }
    }
  });
}
