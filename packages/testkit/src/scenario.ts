/**
 * One crash scenario: under load, arm a crash point, start a handoff, let the process die
 * there (or freeze), restart the supervisor if it was the one, then check the promises and
 * that a following handoff commits.
 */
import type { HandoffRequest } from '@handoff/supervisor';
import { isAlive } from '@handoff/supervisor/internal';
import { checkPromises } from './checks.js';
import type { Cluster } from './cluster.js';
import { LoadDriver } from './load.js';
import type { LoadOptions } from './load.js';

/** A crash scenario. */
export interface CrashScenario {
  /** The crash point (see `crashPoint` in `@handoff/core`). */
  readonly point: string;
  /** Which role the point belongs to. */
  readonly role: 'supervisor' | 'incumbent' | 'successor';
  /** SIGKILL (default) or SIGSTOP (a hang; the supervisor is thawed after `frozenMs`). */
  readonly signal?: 'SIGKILL' | 'SIGSTOP';
  /** How long a frozen supervisor stays frozen. Default 3 × the liveness timeout. */
  readonly frozenMs?: number;
  /** The handoff to run (default: the same daemon). */
  readonly request?: HandoffRequest;
  /** Restart the supervisor instead of starting a handoff to reach the point (session points). */
  readonly trigger?: 'handoff' | 'restart';
  /**
   * Once the point fired, SIGKILL the incumbent as well (then a process the point froze goes
   * on): the incumbent dying while the other process is at that point.
   */
  readonly killIncumbent?: boolean;
  /** The load run through the scenario (paths for a daemon with another API than the example's); default 4 readers, 1 writer, a probe every 5 ms. */
  readonly load?: Omit<LoadOptions, 'port'>;
}

/** What happened. */
export interface CrashScenarioResult {
  /** Broken promises; empty when all held. */
  readonly problems: string[];
  /** The pid that reached the point. */
  readonly firedBy: number | null;
  /** The daemon serving before the scenario, and after recovery (before the following handoff). */
  readonly servedBefore: number | null;
  readonly servedAfter: number | null;
  /** The build id the serving daemon reports after recovery (the `buildId` of its health answer), if any. */
  readonly buildAfter: string | null;
  /** The supervisor's restarts count after recovery. */
  readonly restarts: number;
  /** The handoff's reply: its result, or the error (e.g. the supervisor died). */
  readonly reply: { readonly ok: boolean; readonly value?: unknown; readonly error?: { readonly code: string; readonly message: string } } | null;
}

/** Runs `scenario` against `cluster`; the cluster is left converged for the next one. */
export async function runCrashScenario(cluster: Cluster, scenario: CrashScenario, livenessMs = 1_000): Promise<CrashScenarioResult> {
  const problems: string[] = [];
  const servedBefore = (await cluster.health())?.pid ?? null;
  const load = new LoadDriver({ readers: 4, writers: 1, probeEveryMs: 5, ...scenario.load, port: cluster.port }).start();
  await load.waitForProgress(20);
  cluster.arm(scenario.point, scenario.signal);
  let reply: Promise<CrashScenarioResult['reply']> | null = null;
  if (scenario.trigger === 'restart') {
    await cluster.killSupervisor();
    void cluster.startSupervisor().catch(() => undefined); // dies at the point
  } else {
    reply = cluster.handoffReply(scenario.request ?? {});
  }
  const firedBy = await cluster.waitFor(`crash point ${scenario.point}`, () => cluster.fired(), 20_000);
  if (scenario.killIncumbent === true && servedBefore !== null) {
    process.kill(servedBefore, 'SIGKILL');
    if (scenario.signal === 'SIGSTOP') process.kill(firedBy, 'SIGCONT');
  }
  if (scenario.role === 'supervisor') {
    if (scenario.signal === 'SIGSTOP') {
      // Frozen: the daemons must resolve the handoff on their own, and one must serve.
      await new Promise((resolve) => setTimeout(resolve, scenario.frozenMs ?? livenessMs * 3));
      const alone = await checkServing(cluster);
      if (alone) problems.push(`while the supervisor was frozen: ${alone}`);
      process.kill(firedBy, 'SIGCONT');
    } else {
      // The binary's keeper starts another supervisor, which recovers.
      await cluster.waitFor('the killed supervisor to be gone', () => !isAlive(firedBy));
      await cluster.awaitRestartedSupervisor(firedBy);
    }
  }
  // The handoff's answer comes once it settled; a supervisor that never answers is a failure, not a hang.
  let timer: NodeJS.Timeout | undefined;
  const unanswered = new Promise<null>((resolve) => {
    timer = setTimeout(() => {
      resolve(null);
    }, 30_000);
  });
  const answered = reply ? await Promise.race([reply, unanswered]) : null;
  clearTimeout(timer);
  if (reply && answered === null) problems.push('the supervisor did not answer the handoff within 30 s');
  problems.push(...(await checkPromises(cluster, load, { allowResets: scenario.role !== 'supervisor' })));
  const after = await cluster.health();
  const servedAfter = after?.pid ?? null;
  const buildAfter = typeof after?.buildId === 'string' ? after.buildId : null;
  const restarts = (await cluster.status().catch(() => null))?.restarts ?? 0;
  cluster.disarm();
  if (problems.length === 0) {
    const next = await cluster.handoffReply({});
    const committed = (next as { ok: boolean; value?: { committed?: boolean } }).value?.committed === true;
    if (!committed) problems.push(`the following handoff did not commit: ${JSON.stringify(next)}`);
  }
  return { problems, firedBy, servedBefore, servedAfter, buildAfter, restarts, reply: answered };
}


/** Null when exactly one daemon serves and holds the lock; else what is wrong. */
async function checkServing(cluster: Cluster): Promise<string | null> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const health = await cluster.health();
    const lock = cluster.lock();
    const pids = cluster.daemonPids();
    if (health && (cluster.stateless || (lock.held && lock.pid === health.pid)) && pids.length === 1) return null;
    if (Date.now() > deadline) return `no single serving lock holder: daemons ${JSON.stringify(pids)}, serving ${String(health?.pid)}, lock ${String(lock.pid)}`;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
