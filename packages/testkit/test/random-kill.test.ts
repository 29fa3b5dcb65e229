/**
 * Random SIGKILLs of the real binary in its standalone default (its keeper holds the
 * listeners): at a random instant of a handoff under load — keep-alive readers, a
 * fresh-connection prober, ledger writers — the supervisor, the incumbent or the successor is
 * killed. After each run, within a bounded time one daemon serves and holds the lock, no
 * acknowledged write is lost, no connection was refused, nothing is orphaned, and the next
 * upgrade commits.
 *
 * HANDOFF_KILL_RUNS=N runs N rounds (default 12; a soak: 500). HANDOFF_KILL_SEED replays one.
 */
import { describe, expect, it, onTestFailed } from 'vitest';
import { DataDirLock } from '@handoff/core';
import { ask } from '@handoff/supervisor-cli/client';
import type { Answer } from '@handoff/supervisor-cli/client';
import { LoadDriver, verifyLedger, waitForValue } from '../src/index.js';
import { Workspace } from './bin.js';

const RUNS = Number(process.env.HANDOFF_KILL_RUNS ?? 12);
const SEED = Number(process.env.HANDOFF_KILL_SEED ?? Date.now() % 1_000_000);
/** Bound on convergence after a kill (a killed incumbent is restarted after the crash backoff). */
const CONVERGE_MS = 30_000;

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

type Victim = 'supervisor' | 'incumbent' | 'successor';

interface Row {
  readonly run: number;
  readonly victim: Victim;
  readonly atMs: number;
  readonly killed: number | null;
  /** Killed while the upgrade was still waiting for its outcome. */
  readonly midHandoff: boolean;
  readonly upgradeExit: number | null;
  readonly convergedMs: number;
  readonly refused: number;
  readonly reset: number;
  readonly writes: number;
}

describe('random SIGKILLs of the standalone binary during handoffs under load', () => {
  it(`${RUNS} runs (seed ${SEED}): one daemon serves with the lock, nothing refused, lost or orphaned, and the next upgrade commits`, async () => {
    const rng = random(SEED);
    await using ws = new Workspace();
    const sup = ws.start(['--config', await ws.configOnFreePort()]);
    const rows: Row[] = [];
    onTestFailed(() => {
      console.error(`seed ${SEED} (HANDOFF_KILL_SEED=${SEED} replays it)`);
      console.table(rows);
      console.error(`--- handoff-supervisor output ---\n${sup.output.split('\n').slice(-200).join('\n')}`);
    });
    await sup.ready();
    const port = await sup.port();

    /** The status once one daemon serves, holds the lock, and nothing else runs. */
    const converged = (): Promise<Answer> =>
      waitForValue(
        'one daemon serving with the lock, no orphan',
        async () => {
          const [s] = await ask(ws.trigger, { cmd: 'status' }).catch(() => []);
          if (s?.type !== 'status' || s.lifecycle !== 'serving' || s.handoff !== null) return null;
          const pid = (s.incumbent as { pid: number } | null)?.pid;
          const lock = DataDirLock.probe(ws.dataDir);
          const daemons = ws.daemons();
          const ok = pid !== undefined && lock.held && lock.pid === pid && daemons.length === 1 && daemons[0] === pid && ws.supervisors().length === 2;
          return ok ? s : null;
        },
        CONVERGE_MS,
        { context: () => `daemons ${ws.daemons().join(',')}; supervisors ${ws.supervisors().join(',')}; lock ${JSON.stringify(DataDirLock.probe(ws.dataDir))}` },
      );

    for (let run = 1; run <= RUNS; run++) {
      const before = await converged();
      const incumbent = (before.incumbent as { pid: number }).pid;
      const victim = (['supervisor', 'incumbent', 'successor'] as const)[Math.floor(rng() * 3)] ?? 'supervisor';
      const atMs = Math.floor(rng() * 500);
      const load = new LoadDriver({ port, readers: 4, writers: 2, probeEveryMs: 5, maxDurationMs: 120_000 }).start();
      await load.waitForProgress(20);
      let settled = false;
      const upgrade = ws.ctl(['upgrade']).finally(() => {
        settled = true;
      });
      // The injected fault's instant: a random point of the handoff, not a wait for an event.
      await new Promise((resolve) => setTimeout(resolve, atMs));
      // The successor: the daemon that is not the incumbent, once spawned (after the commit, it serves).
      const target =
        victim === 'supervisor'
          ? (before.supervisorPid as number)
          : victim === 'incumbent'
            ? incumbent
            : await waitForValue('the successor to exist', () => ws.daemons().find((pid) => pid !== incumbent) ?? null, 5_000).catch(() => null);
      const killedAt = Date.now();
      let killed: number | null = null;
      const midHandoff = !settled;
      try {
        if (target !== null) process.kill(target, 'SIGKILL');
        killed = target;
      } catch {
        // already gone: the handoff had ended
      }
      const { code } = await upgrade;
      await converged();
      const convergedMs = Date.now() - killedAt;
      await load.waitForProgress(20);
      const report = await load.stop();
      rows.push({ run, victim, atMs, killed, midHandoff: midHandoff && killed !== null, upgradeExit: code, convergedMs, refused: report.errors.refused, reset: report.errors.reset, writes: report.acknowledgedWrites });
      expect(report.errors.refused, `run ${run}: ${report.samples.join('\n')}`).toBe(0);
      expect(await verifyLedger(port, load.ledger), `run ${run}: acknowledged writes lost`).toEqual([]);
      const next = await ws.ctl(['upgrade']);
      expect(next.code, `run ${run}: the next upgrade\n${next.stdout}${next.stderr}`).toBe(0);
    }
    console.table(rows);
    // The faults must land inside handoffs, not only between them.
    expect(rows.filter((r) => r.midHandoff).length, 'runs that killed a process while its handoff was in progress').toBeGreaterThanOrEqual(Math.ceil(RUNS / 3));
  }, RUNS * 40_000 + 30_000);
});
