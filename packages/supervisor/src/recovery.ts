/**
 * Recovery and adoption: what the supervisor does at start and before every restart. It reads
 * the journal, then converges on the facts rather than on the file: it adopts the process
 * that holds the data directory's lock and answers on the control socket; it waits (bounded)
 * while a live process holds the lock without answering yet (a daemon still starting when the
 * previous supervisor died), so that it never starts a second one; and it stops every other
 * daemon the journal names (an orphaned successor).
 */
import { DataDirLock } from '@handoff/core';
import type { JournalPhase, JournalRecord } from '@handoff/protocol';
import { messageOf } from '@handoff/protocol/internal';
import { publish } from './channels.js';
import type { JournalFile } from './journal-file.js';
import { isAlive, processStartTime, stopProcess } from './processes.js';
import type { IncumbentSession, SessionConnector } from './session.js';

/** What recovery found and did. */
export interface Recovery {
  /** The session with the live lock holder, adopted; null when nobody serves. */
  readonly adopted: IncumbentSession | null;
  /** Daemons named by the journal that were stopped. */
  readonly stopped: readonly number[];
  readonly journalPhase: JournalPhase | null;
  /** The journal record read, if any. */
  readonly record: JournalRecord | null;
}

/** What recovery needs. */
export interface RecoveryContext {
  readonly journal: JournalFile;
  readonly connector: SessionConnector;
  /** Null for a daemon without a data directory: then whoever answers on the control socket is adopted. */
  readonly dataDir: string | null;
  readonly livenessMs: number;
  readonly startTimeoutMs: number;
  readonly stopGraceMs: number;
}

/** Converges: adopts the live lock holder, or reports that nobody serves (so a cold start is due). */
export async function recover(ctx: RecoveryContext): Promise<Recovery> {
  // A journal that cannot be read (or is damaged, and moved aside) is no reason to stop: the
  // lock and the control socket decide anyway.
  let record: JournalRecord | null = null;
  try {
    const read = ctx.journal.read();
    record = read.record;
    if (read.damaged) publish('journalError', { reason: read.damaged });
  } catch (error) {
    publish('journalError', { reason: messageOf(error) });
  }
  const known = [record?.incumbent, record?.successor].filter((p): p is NonNullable<typeof p> => p !== null && p !== undefined);
  const sameProcess = (p: { pid: number; startTime: string | null }): boolean => isAlive(p.pid) && (p.startTime === null || processStartTime(p.pid) === p.startTime);
  // Daemons resolve a dead supervisor on their own within the liveness timeout and the lock
  // retry. A live process holding the lock is given up to the start timeout to answer.
  const started = Date.now();
  const deadline = started + (record && record.phase !== 'idle' ? ctx.livenessMs + 6_000 : 2_000);
  const holderDeadline = started + ctx.startTimeoutMs;
  let adopted: IncumbentSession | null;
  for (;;) {
    adopted = await ctx.connector.connectToLockHolder(1_000);
    if (adopted) break;
    const lock = ctx.dataDir === null ? { held: false } : DataDirLock.probe(ctx.dataDir);
    if (!lock.held && !known.some(sameProcess)) break;
    const now = Date.now();
    // A held lock means a live holder (the kernel frees it with its process), even while the
    // pid file still names the previous one: wait for it to answer, up to the start timeout.
    if (now >= deadline && !(lock.held && now < holderDeadline)) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const stopped: number[] = [];
  for (const p of known) {
    if (p.pid === adopted?.hello.pid || !sameProcess(p)) continue;
    await stopProcess(p.pid, ctx.stopGraceMs);
    stopped.push(p.pid);
  }
  publish('recovered', { journalPhase: record?.phase ?? null, adopted: adopted?.hello.pid ?? null, stopped });
  return { adopted, stopped, journalPhase: record?.phase ?? null, record };
}
