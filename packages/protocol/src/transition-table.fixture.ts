/**
 * The harness of the exhaustive (state × event) tables of the machine tests. The tables are
 * normative and live in PROTOCOL.md (section 17), one markdown table per machine after a
 * `<!-- table:<machine> -->` marker: a row per event, a column per representative state. A
 * cell is `=` (stays in its phase, no violation), `!` (a violation that leaves the phase),
 * `!phase` (a violation the machine handles by moving to `phase`), or a phase name (a normal
 * transition). The tests check the machines against the document, cell by cell.
 */
import { readFileSync } from 'node:fs';
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
  readonly transition: (state: S, event: E) => R;
  /** Checks the machine's reaction to a violation. */
  readonly onViolation: (result: R, before: S) => void;
  /** Checks that an ignored event did nothing visible. */
  readonly onIgnored?: (result: R, column: string) => void;
}

const PROTOCOL = readFileSync(new URL('../PROTOCOL.md', import.meta.url), 'utf8');

/** The table of `machine` in PROTOCOL.md: its state names (header), and event → cells. */
export function protocolTable(machine: string): { readonly states: string[]; readonly rows: Map<string, string[]> } {
  const marker = `<!-- table:${machine} -->\n`;
  const at = PROTOCOL.indexOf(marker);
  if (at < 0) throw new Error(`PROTOCOL.md has no ${marker.trim()}`);
  const lines = PROTOCOL.slice(at + marker.length).split('\n');
  const end = lines.findIndex((l) => !l.startsWith('|'));
  const cells = (line: string): string[] => line.split('|').slice(1, -1).map((c) => c.trim().replace(/^`|`$/g, ''));
  const [header = '', , ...body] = lines.slice(0, end < 0 ? lines.length : end);
  return { states: cells(header).slice(1), rows: new Map(body.map((l) => [cells(l)[0] ?? '', cells(l).slice(1)])) };
}

/** Declares one test per (row, column) pair of the machine's table in PROTOCOL.md, plus one that the table is complete. */
export function describeTable<S extends { readonly phase: string }, E, R extends Result<S>>(spec: TableSpec<S, E, R>): void {
  const columns = Object.keys(spec.events);
  const table = protocolTable(spec.machine);
  const cellsOf = (row: string): string[] => {
    const i = table.states.indexOf(row);
    return columns.map((event) => table.rows.get(event)?.[i] ?? '(missing)');
  };

  describe(`${spec.machine} machine: every (state, event) pair of PROTOCOL.md section 17`, () => {
    it('has a column reaching every phase and a row for every event, in order', () => {
      expect(new Set(Object.values(spec.states).map((s) => s.phase))).toEqual(new Set(spec.phases));
      for (const [row, state] of Object.entries(spec.states)) expect(row.split('/')[0]).toBe(state.phase);
      expect(table.states).toEqual(Object.keys(spec.states));
      expect([...table.rows.keys()]).toEqual(columns);
      for (const [event, cells] of table.rows) expect(cells, event).toHaveLength(table.states.length);
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
