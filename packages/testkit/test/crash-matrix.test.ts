/**
 * Every row of docs/crash-matrix.md, with real processes under load, repeated (races such as the
 * "sent Begin" row only show on repetition). Each row: arm the point, hand off, let the
 * process die there, recover, check the invariants (one serving lock holder, no lost
 * acknowledged write, no refused connection, no orphan), and hand off once more.
 */
import { describe, expect, it, onTestFailed } from 'vitest';
import { checkPromises, runCrashScenario, startCluster } from '../src/index.js';
import { kv } from './kv.js';
import { stateless } from './stateless.js';
import type { CrashScenario } from '../src/index.js';

// 2 rounds in `pnpm test` (CI runs a third on Node 24), the second only of the rows a race
// decides (`race`); HANDOFF_CRASH_REPEAT=20 soaks, repeating every row but the `once` ones.
const REPEAT = Number(process.env.HANDOFF_CRASH_REPEAT ?? 2);
const SOAK = process.env.HANDOFF_CRASH_REPEAT !== undefined;
// HANDOFF_CRASH_SAMPLE=n runs every n-th row only (and every `race` row): CI's second pass, on
// Node 24, checks the crash paths on that Node without repeating the whole matrix.
const SAMPLE = Math.max(1, Number(process.env.HANDOFF_CRASH_SAMPLE ?? 1));

/**
 * Who serves after recovery: the original incumbent, a new daemon (the successor or a cold
 * start), or either (a race the lock decides); and the handoff's outcome when the supervisor
 * lived to report it.
 */
type Expect = {
  readonly serves: 'original' | 'new' | 'either';
  readonly outcome?: 'committed' | 'promoted' | 'rolledBack';
  /** Killed past the commit point: when the handoff committed, the supervisor restarted the committed program. */
  readonly restartsCommitted?: true;
};
const O: Expect = { serves: 'original' };
/** A handoff to build v2, so that a restart can be told to run the committed program. */
const V2 = { daemon: { env: { KV_BUILD_ID: 'v2' } } };
const N: Expect = { serves: 'new' };

/**
 * `once`: run in the first round only, even in a soak — rows whose outcome no race decides (the
 * successor dies on its own before its Hello, or holding the lock before Ready, as rows
 * repeated every round already show). `race`: the outcome depends on who notices what first;
 * these rows are the ones `pnpm test` repeats (a soak repeats every row but the `once` ones).
 */
type Row = CrashScenario & { readonly row: string; readonly expect: Expect; readonly once?: true; readonly race?: true };
const ROWS: Row[] = [
  // The supervisor killed (a new one is then started with the same listeners).
  { row: "supervisor: read O's Hello", role: 'supervisor', point: 'supervisor:received-Hello-from-incumbent', trigger: 'restart', expect: O },
  // N preloads its data before its Hello (made to last 1 s here): the supervisor dies meanwhile.
  { row: 'supervisor: spawned N, N preloading', role: 'supervisor', point: 'supervisor:spawned', request: { daemon: { env: { KV_PRELOAD_DELAY_MS: '1000' } } }, expect: O },
  { row: "supervisor: finished N's handshake", role: 'supervisor', point: 'supervisor:sent-HelloAck-to-successor', expect: O },
  { row: 'supervisor: sent PrepareHandoff', role: 'supervisor', point: 'supervisor:sent-PrepareHandoff-to-incumbent', expect: O },
  { row: 'supervisor: received Drained', role: 'supervisor', point: 'supervisor:received-Drained-from-incumbent', expect: O },
  { row: 'supervisor: sent SealRequest', role: 'supervisor', point: 'supervisor:sent-SealRequest-to-incumbent', expect: O },
  { row: 'supervisor: received SealComplete', role: 'supervisor', point: 'supervisor:received-SealComplete-from-incumbent', expect: O },
  { row: 'supervisor: sent Begin', role: 'supervisor', point: 'supervisor:sent-Begin-to-successor', race: true, expect: { serves: 'either' } },
  { row: 'supervisor: received Ready', role: 'supervisor', point: 'supervisor:received-Ready-from-successor', expect: N },
  { row: 'supervisor: sent Commit', role: 'supervisor', point: 'supervisor:sent-Commit-to-successor', expect: N },
  { row: 'supervisor: cleared its journal', role: 'supervisor', point: 'supervisor:journal-idle', expect: N },
  { row: 'supervisor: frozen with SIGSTOP', role: 'supervisor', point: 'supervisor:sent-SealRequest-to-incumbent', signal: 'SIGSTOP', expect: O },
  // The successor killed.
  { row: 'successor: preloading, before its Hello', role: 'successor', point: 'successor:preloading', once: true, expect: { serves: 'original', outcome: 'rolledBack' } },
  { row: 'successor: before its handshake', role: 'successor', point: 'successor:before-handshake', expect: { serves: 'original', outcome: 'rolledBack' } },
  { row: 'successor: after its handshake', role: 'successor', point: 'successor:after-handshake', expect: { serves: 'original', outcome: 'rolledBack' } },
  { row: 'successor: after Begin, before taking the lock', role: 'successor', point: 'successor:after-begin', expect: { serves: 'original', outcome: 'rolledBack' } },
  { row: 'successor: caught up with its preload (the lock held), before listening', role: 'successor', point: 'successor:caught-up', once: true, expect: { serves: 'original', outcome: 'rolledBack' } },
  { row: 'successor: after taking the lock and listening, before Ready', role: 'successor', point: 'successor:listening', expect: { serves: 'original', outcome: 'rolledBack' } },
  { row: 'successor: hung after Begin (SIGSTOP)', role: 'successor', point: 'successor:after-begin', signal: 'SIGSTOP', expect: { serves: 'original', outcome: 'rolledBack' } },
  // The successor killed after the commit point: child supervision restarts the committed
  // program. (Right after it sent Ready, the supervisor may see its death before its Ready:
  // then the handoff rolls back instead, and the original serves on.)
  { row: 'successor: after sending Ready', role: 'successor', point: 'successor:sent-Ready', request: V2, race: true, expect: { serves: 'either', restartsCommitted: true } },
  { row: 'successor: after receiving Commit', role: 'successor', point: 'successor:received-Commit', request: V2, expect: { serves: 'new', outcome: 'committed', restartsCommitted: true } },
  { row: 'successor: after binding its control socket', role: 'successor', point: 'successor:control-bound', request: V2, expect: { serves: 'new', outcome: 'committed', restartsCommitted: true } },
  // The incumbent killed.
  // The successor holds itself at its preload (SIGSTOP) while the incumbent is SIGKILLed, then goes on: it recovers from disk, or the supervisor cold-starts.
  { row: 'incumbent: killed while its successor preloads', role: 'successor', point: 'successor:preloading', signal: 'SIGSTOP', killIncumbent: true, once: true, expect: { serves: 'new', outcome: 'promoted' } },
  { row: 'incumbent: inside drain', role: 'incumbent', point: 'incumbent:inside-drain', expect: { serves: 'new', outcome: 'promoted' } },
  { row: 'incumbent: after sending Drained', role: 'incumbent', point: 'incumbent:sent-Drained', expect: { serves: 'new', outcome: 'promoted' } },
  { row: 'incumbent: inside seal, before releasing the lock', role: 'incumbent', point: 'incumbent:inside-seal', expect: { serves: 'new', outcome: 'promoted' } },
  { row: 'incumbent: after releasing the lock', role: 'incumbent', point: 'incumbent:after-release', expect: { serves: 'new', outcome: 'promoted' } },
  { row: 'incumbent: after sending SealComplete', role: 'incumbent', point: 'incumbent:sent-SealComplete', expect: { serves: 'new', outcome: 'committed' } },
  { row: 'incumbent: after receiving Commit', role: 'incumbent', point: 'incumbent:received-Commit', expect: { serves: 'new', outcome: 'committed' } },
];

/** The overlap rows (a daemon without a data directory, PROTOCOL.md section 7): a load with no writes, as there is no data. */
const OVERLAP_LOAD = { readers: 4, writers: 0, probeEveryMs: 5 };
const SV2 = { daemon: { env: { STATELESS_BUILD_ID: 'v2' } } };
const OVERLAP_ROWS: Row[] = [
  { row: 'overlap, supervisor: sent Begin (both daemons may accept)', role: 'supervisor', point: 'supervisor:sent-Begin-to-successor', race: true, expect: { serves: 'either' } },
  { row: "overlap, supervisor: received N's Ready", role: 'supervisor', point: 'supervisor:received-Ready-from-successor', race: true, expect: { serves: 'either' } },
  { row: 'overlap, supervisor: committed, stopping O', role: 'supervisor', point: 'supervisor:stopping-incumbent', expect: N },
  { row: 'overlap, successor: accepting, before Ready', role: 'successor', point: 'successor:listening', once: true, expect: { serves: 'original', outcome: 'rolledBack' } },
  { row: 'overlap, successor: after sending Ready', role: 'successor', point: 'successor:sent-Ready', request: SV2, race: true, expect: { serves: 'either', restartsCommitted: true } },
  { row: 'overlap, incumbent: stopping after the commit point', role: 'incumbent', point: 'incumbent:stopping', once: true, expect: { serves: 'new', outcome: 'committed' } },
];

describe('crash matrix', () => {
  const rows = [...ROWS.map((r) => ({ ...r, stateless: false })), ...OVERLAP_ROWS.map((r) => ({ ...r, load: OVERLAP_LOAD, stateless: true }))].filter((r, i) => i % SAMPLE === 0 || r.race === true);
  for (let round = 1; round <= REPEAT; round++) {
    for (const scenario of rows.filter((r) => round === 1 || (SOAK ? !r.once : r.race === true))) {
      it(`round ${round}: ${scenario.row}`, async () => {
        await using cluster = await startCluster(scenario.stateless ? { daemon: stateless(), stateless: true } : { daemon: kv() });
        onTestFailed(() => {
          console.error(`--- ${scenario.row}: output (${cluster.dir}) ---\n${cluster.output()}\n--- events ---\n${cluster.events.map((e) => JSON.stringify(e)).join('\n')}`);
        });
        const result = await runCrashScenario(cluster, scenario);
        expect(result.firedBy).not.toBeNull();
        expect(result.problems).toEqual([]);
        // A daemon the recovering supervisor stops (the old incumbent, sealed already) stops cleanly.
        expect(cluster.output()).not.toMatch(/stop failed/);
        if (scenario.expect.serves === 'original') expect(result.servedAfter, 'the original incumbent serves').toBe(result.servedBefore);
        if (scenario.expect.serves === 'new') expect(result.servedAfter, 'a new daemon serves').not.toBe(result.servedBefore);
        if (scenario.expect.outcome) expect(result.reply?.value).toMatchObject({ outcome: scenario.expect.outcome });
        if (scenario.expect.restartsCommitted) {
          const committed = (result.reply?.value as { committed?: boolean } | undefined)?.committed === true;
          if (committed) {
            // The dead successor is not what serves; a restarted daemon runs the committed build.
            expect(result.servedAfter).not.toBe(result.firedBy);
            expect(result.servedAfter).not.toBe(result.servedBefore);
            expect(result.buildAfter).toBe('v2');
            expect(result.restarts).toBeGreaterThanOrEqual(1);
          } else {
            expect(result.servedAfter, 'rolled back: the original incumbent serves').toBe(result.servedBefore);
          }
        }
      });
    }
  }
});

describe('recovery beyond the matrix', () => {
  it('a supervisor killed right after cold-starting a daemon: the one its keeper starts next adopts that daemon, never a second', async () => {
    // The daemon holds the lock 3 s before it answers: longer than recovery's usual wait.
    await using cluster = await startCluster({ daemon: kv({ KV_OPEN_DELAY_MS: '3000' }) });
    onTestFailed(() => {
      console.error(cluster.output());
    });
    await cluster.killSupervisor();
    const first = await cluster.health();
    if (first) process.kill(first.pid, 'SIGKILL');
    await cluster.waitFor('the daemon to be gone', () => cluster.daemonPids().length === 0);
    cluster.arm('supervisor:cold-started');
    const started = cluster.startSupervisor(); // its supervisor dies right after spawning the daemon
    const dead = await cluster.waitFor('the crash point', () => cluster.fired());
    // (Right after taking the lock, the pid file may still name the daemon killed above.)
    const starting = await cluster.waitFor('the cold-started daemon to hold the lock', () => {
      const lock = cluster.lock();
      return lock.held && lock.pidAlive ? lock.pid : null;
    });
    // The keeper starts another supervisor at once, while that daemon still opens its data.
    await cluster.awaitRestartedSupervisor(dead);
    await started;
    expect(await checkPromises(cluster, null)).toEqual([]);
    expect((await cluster.health())?.pid).toBe(starting);
    expect(cluster.daemonPids()).toEqual([starting]);
    cluster.disarm();
    expect(await cluster.handoff()).toMatchObject({ committed: true });
  });
});
