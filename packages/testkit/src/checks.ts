/**
 * Checks of the promises (docs/design.md, "The promises"; the invariants of docs/crash-matrix.md) against a cluster.
 */
import type { Cluster } from './cluster.js';
import type { LoadDriver } from './load.js';
import { verifyLedger } from './load.js';

/** Options of {@link checkPromises}. */
export interface CheckOptions {
  /** Allow resets: connections a killed process had accepted (counted, not a failure). */
  readonly allowResets?: boolean;
  /** How long the system has to converge to one serving daemon. Default 15 s. */
  readonly convergeMs?: number;
}

/**
 * Waits until exactly one daemon is alive, serves, and holds the lock — and, while a
 * supervisor runs, until its status names that daemon as the one serving (it never reports
 * a dead pid); then stops the load (which ran through the fault and the recovery) and checks
 * every acknowledged write and the load's errors. Returns the broken promises (empty when
 * all hold).
 */
export async function checkPromises(cluster: Cluster, load: LoadDriver | null, options: CheckOptions = {}): Promise<string[]> {
  const problems: string[] = [];
  const deadline = Date.now() + (options.convergeMs ?? 15_000);
  let last: string;
  for (;;) {
    const pids = cluster.daemonPids();
    const health = await cluster.health();
    const lock = cluster.lock();
    const status = cluster.supervisorPid === null ? null : await cluster.status().catch(() => null);
    const reported = status ? `the supervisor reports ${status.lifecycle}${status.incumbent ? ` with pid ${status.incumbent.pid}` : ''}` : 'no supervisor';
    last = `daemons alive ${JSON.stringify(pids)}, serving ${String(health?.pid)}, lock ${lock.held ? `held by ${String(lock.pid)}` : 'free'}, ${reported}`;
    const truthful = cluster.supervisorPid === null || (status?.lifecycle === 'serving' && status.incumbent?.pid === health?.pid);
    const holds = cluster.stateless || (lock.held && lock.pid === health?.pid);
    if (pids.length === 1 && health && health.pid === pids[0] && holds && truthful) break;
    if (Date.now() > deadline) {
      problems.push(`no convergence to exactly one serving daemon${cluster.stateless ? '' : ' holding the lock'}, reported by the supervisor: ${last}`);
      return problems;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (load) {
    // The load ran through the fault and the recovery; stop it only now.
    const report = await load.stop();
    const lost = await verifyLedger(cluster.port, load.ledger, '127.0.0.1', load.writePrefix);
    if (lost.length > 0) problems.push(`${lost.length} of ${load.ledger.size} acknowledged writes lost: ${lost.slice(0, 5).join(', ')}`);
    const e = report.errors;
    if (e.refused > 0) problems.push(`${e.refused} refused connections`);
    if (e.timeout > 0) problems.push(`${e.timeout} timed-out requests`);
    if (e.non2xx > 0) problems.push(`${e.non2xx} non-2xx answers`);
    if (e.other > 0) problems.push(`${e.other} other errors`);
    if (e.reset > 0 && !options.allowResets) problems.push(`${e.reset} reset connections`);
    if (problems.length > 0 && report.samples.length > 0) problems.push(`samples: ${report.samples.slice(0, 5).join(' | ')}`);
  }
  return problems;
}
