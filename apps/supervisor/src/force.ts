/**
 * `--force`: taking over from a running instance. One that answers on its trigger socket is
 * asked to release its daemon (its supervisor and keeper exit, the daemon serves on holding
 * the listeners), and the new instance takes the daemon over through SpawnHolder: no
 * connection is refused. One that does not answer is stopped with its whole process tree
 * (SIGTERM, then SIGKILL) and the new instance cold-starts: that is an outage, and it is
 * reported.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { servingDaemonPid } from '@handoff/supervisor';
import { isAlive, waitForDeath } from '@handoff/supervisor/internal';
import { ask } from './client.js';
import type { Config } from './config.js';

/** How the previous instance was dealt with. */
export type ForceOutcome =
  /** It released its daemon, which serves on: take it over. */
  | { readonly kind: 'released'; readonly pid: number; readonly daemonPid: number | null }
  /** It did not answer; these processes were stopped (an outage began at `since`). */
  | { readonly kind: 'stopped'; readonly pid: number; readonly stopped: readonly number[]; readonly killed: readonly number[]; readonly since: number; readonly why: string };

/** The pids of `root`'s descendants (from /proc), children before grandchildren. */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift() ?? 0;
    for (const child of children.get(pid) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}

function signal(pid: number, s: NodeJS.Signals): void {
  try {
    process.kill(pid, s);
  } catch {
    // gone
  }
}

/** Deals with the live instance `pid` that owns the pid file; resolves once it is gone. */
export async function forceOut(config: Config, pid: number): Promise<ForceOutcome> {
  // A missing or refusing trigger socket may be a supervisor being restarted by its keeper
  // (backoff up to 5 s, then recovery): give it that long before calling it unresponsive.
  const socketDeadline = Date.now() + 10_000 + config.timeouts.livenessMs;
  const handoffDeadline = Date.now() + config.timeouts.totalMs;
  let why: string;
  for (;;) {
    let answer;
    try {
      [answer] = await ask(config.triggerSocket, { cmd: 'release' }, undefined, { timeoutMs: 3_000 });
    } catch (error) {
      const message = (error as Error).message;
      if (/did not answer within/.test(message) || Date.now() > socketDeadline) {
        why = `it did not answer on its trigger socket (${message})`;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
      continue;
    }
    if (answer?.type === 'releasing') {
      if (await waitForDeath(pid, config.timeouts.shutdownMs)) return { kind: 'released', pid, daemonPid: typeof answer.daemonPid === 'number' ? answer.daemonPid : null };
      why = `it released its daemon but did not exit within ${config.timeouts.shutdownMs} ms`;
      break;
    }
    // A handoff in progress: wait for its outcome, then ask again.
    if (answer?.type !== 'error' || answer.code !== 'HANDOFF_IN_PROGRESS') {
      why = `it answered ${JSON.stringify(answer ?? null)} (an older version without "release"?)`;
      break;
    }
    if (Date.now() > handoffDeadline) {
      why = `its handoff was still in progress after ${config.timeouts.totalMs} ms`;
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  // Unresponsive: the keeper and the data lock's holder are asked to stop (SIGTERM; every
  // process of the tree gets SIGCONT in case it was stopped), and whatever of the tree is
  // left after the stop grace is killed. The lock holder is named apart: a daemon adopted
  // after a supervisor restart is no longer a descendant of the keeper.
  const holder = servingDaemonPid(config.daemon.dataDir, config.journal);
  const daemon = holder !== pid ? holder : null;
  const targets = [...new Set([pid, ...descendants(pid), ...(daemon === null ? [] : [daemon])])].filter(isAlive);
  const since = Date.now();
  for (const p of [pid, daemon]) if (p !== null) signal(p, 'SIGTERM');
  for (const p of targets) signal(p, 'SIGCONT');
  await Promise.all([pid, daemon].map((p) => (p === null ? Promise.resolve(true) : waitForDeath(p, config.timeouts.stopGraceMs))));
  const killed = targets.filter(isAlive);
  for (const p of killed) signal(p, 'SIGKILL');
  await Promise.all(killed.map((p) => waitForDeath(p, 5_000)));
  return { kind: 'stopped', pid, stopped: targets, killed, since, why };
}
