/**
 * The supervisor's journal record: the phase of the handoff in progress, written durably
 * (temp file, fsync, rename, fsync dir) before each irreversible step, and read back by a
 * restarted supervisor to converge. The record is JSON, so an operator can read it.
 */
import { HandoffProtocolError, ProtocolErrorCode, describe } from './errors.js';
import type { DaemonProgram } from './lifecycle-machine.js';
import type { SealReport } from './messages.js';
import { FieldLimits } from './messages.js';

/**
 * Journal phases, in the order a handoff writes them:
 * - `idle`: no handoff in progress (or the last one finished).
 * - `spawning`: a successor is about to be spawned.
 * - `preparing`: the successor said Hello; PrepareHandoff is about to go to the incumbent.
 * - `sealing`: the incumbent drained; SealRequest is about to go (after it the lock is released).
 * - `beginning`: Begin is about to go to the successor (it will take the lock).
 * - `committed`: a valid Ready arrived: the successor is the incumbent from now on.
 * - `aborting`: the handoff is being rolled back.
 */
export const JOURNAL_PHASES = ['idle', 'spawning', 'preparing', 'sealing', 'beginning', 'committed', 'aborting'] as const;
/** One of {@link JOURNAL_PHASES}. */
export type JournalPhase = (typeof JOURNAL_PHASES)[number];

/** A daemon process known to the journal. */
export interface JournalProcess {
  readonly pid: number;
  /** Process start time (e.g. from /proc/<pid>/stat), to tell a reused pid apart. */
  readonly startTime: string | null;
}

/**
 * What the supervisor runs, kept across its own restarts: the program that serves (`current`),
 * whether it proved good, the last known good one before it, the program a handoff in progress
 * hands off to (`next`), the configured program this was derived from (a changed configuration
 * wins over the record), the serving daemon's generation and since when it serves.
 */
export interface JournalVersions {
  readonly configured: DaemonProgram;
  readonly current: DaemonProgram;
  readonly currentGood: boolean;
  readonly lastGood: DaemonProgram | null;
  readonly next: DaemonProgram | null;
  readonly generation: number;
  /** When the serving daemon (`incumbent`) started to serve, ms since the epoch; null when none serves. */
  readonly servingSince: number | null;
}

/** The durable record of the handoff in progress. */
export interface JournalRecord {
  /** Record format version. */
  readonly v: 1;
  readonly phase: JournalPhase;
  readonly handoffId: string | null;
  /** Wall clock of the write, ms since the epoch. */
  readonly writtenAt: number;
  readonly supervisorPid: number;
  readonly incumbent: JournalProcess | null;
  readonly successor: JournalProcess | null;
  readonly seal: SealReport | null;
  /** Absent from records of older supervisors (then null). */
  readonly versions: JournalVersions | null;
  /** The last handoff's result as the supervisor reported it (a JSON object of at most 16 KiB), or null. */
  readonly lastHandoff: Readonly<Record<string, unknown>> | null;
}

function bad(what: string, got: unknown): HandoffProtocolError {
  return new HandoffProtocolError(
    ProtocolErrorCode.JournalInvalid,
    `journal record: ${what}, got ${describe(got)}; the file is damaged or from another version — move it aside and restart (recovery then checks the lock and control socket)`,
    { field: what },
  );
}

function own(obj: object, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(obj, key) ? (obj as Record<string, unknown>)[key] : undefined;
}

function isUint(v: unknown, max = Number.MAX_SAFE_INTEGER): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;
}

function parseProcess(v: unknown, field: string): JournalProcess | null {
  if (v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw bad(`${field} must be an object or null`, v);
  const pid = own(v, 'pid');
  const startTime = own(v, 'startTime');
  if (!isUint(pid, FieldLimits.pidMax) || pid === 0) throw bad(`${field}.pid must be a pid`, pid);
  if (startTime !== null && (typeof startTime !== 'string' || startTime.length > 64)) throw bad(`${field}.startTime must be a short string or null`, startTime);
  return { pid, startTime };
}

function parseSeal(v: unknown): SealReport | null {
  if (v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw bad('seal must be an object or null', v);
  const revisions = own(v, 'revisions');
  const fingerprint = own(v, 'fingerprint');
  if (!Array.isArray(revisions) || revisions.length > FieldLimits.revisionsMax || !revisions.every((r) => isUint(r))) {
    throw bad('seal.revisions must be an array of non-negative integers', revisions);
  }
  if (typeof fingerprint !== 'string' || fingerprint.length > FieldLimits.fingerprintMax) throw bad('seal.fingerprint must be a string', fingerprint);
  return { revisions: revisions, fingerprint };
}

/** A program as the journal keeps it. No bounds but the record's: whatever the operator configured and the system could run is kept. */
function parseProgram(v: unknown, field: string): DaemonProgram {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(`${field} must be a program object`, v);
  const command = own(v, 'command');
  const args = own(v, 'args');
  const env = own(v, 'env');
  const cwd = own(v, 'cwd');
  if (typeof command !== 'string' || command === '') throw bad(`${field}.command must be a non-empty string`, command);
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw bad(`${field}.args must be an array of strings`, args);
  if (typeof env !== 'object' || env === null || Array.isArray(env)) throw bad(`${field}.env must be an object of strings`, env);
  const entries = Object.entries(env as Record<string, unknown>);
  if (!entries.every(([, x]) => typeof x === 'string')) throw bad(`${field}.env must be an object of strings`, env);
  if (cwd !== null && (typeof cwd !== 'string' || cwd === '')) throw bad(`${field}.cwd must be a path or null`, cwd);
  return { command, args: args, env: Object.fromEntries(entries) as Record<string, string>, cwd };
}

function parseVersions(v: unknown): JournalVersions | null {
  if (v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw bad('versions must be an object or null', v);
  const currentGood = own(v, 'currentGood');
  const generation = own(v, 'generation');
  const servingSince = own(v, 'servingSince') ?? null;
  if (typeof currentGood !== 'boolean') throw bad('versions.currentGood must be a boolean', currentGood);
  if (!isUint(generation)) throw bad('versions.generation must be a non-negative integer', generation);
  if (servingSince !== null && !isUint(servingSince)) throw bad('versions.servingSince must be a timestamp in ms or null', servingSince);
  const lastGood = own(v, 'lastGood') ?? null;
  const next = own(v, 'next') ?? null;
  return {
    configured: parseProgram(own(v, 'configured'), 'versions.configured'),
    current: parseProgram(own(v, 'current'), 'versions.current'),
    currentGood,
    lastGood: lastGood === null ? null : parseProgram(lastGood, 'versions.lastGood'),
    next: next === null ? null : parseProgram(next, 'versions.next'),
    generation,
    servingSince,
  };
}

/** Largest `lastHandoff` kept in the journal, as JSON (a supervisor shortens what it keeps). */
export const LAST_HANDOFF_MAX = 64 * 1024;
/** Largest journal record read: a bound against a runaway file, far above what a supervisor writes. */
const RECORD_MAX = 16 * 1024 * 1024;

function parseLastHandoff(v: unknown): Readonly<Record<string, unknown>> | null {
  if (v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v) || JSON.stringify(v).length > LAST_HANDOFF_MAX) throw bad(`lastHandoff must be an object of at most ${LAST_HANDOFF_MAX} bytes of JSON, or null`, v);
  return v as Record<string, unknown>;
}

/** Serialises a record (one line of JSON with a trailing newline). */
export function encodeJournal(record: JournalRecord): string {
  parseJournal(JSON.stringify(record)); // never write what cannot be read back
  return `${JSON.stringify(record)}\n`;
}

/**
 * Parses and validates a journal record.
 * @throws HandoffProtocolError JOURNAL_INVALID naming the bad field.
 */
export function parseJournal(text: string): JournalRecord {
  if (text.length > RECORD_MAX) throw bad(`must be at most ${RECORD_MAX} bytes`, `${text.length} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new HandoffProtocolError(ProtocolErrorCode.JournalInvalid, `journal record is not JSON (${describe(text)}); the file is damaged — move it aside and restart`, {}, { cause });
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('must be a JSON object', raw);
  const v = own(raw, 'v');
  if (v !== 1) throw bad('v must be 1', v);
  const phase = own(raw, 'phase');
  if (typeof phase !== 'string' || !(JOURNAL_PHASES as readonly string[]).includes(phase)) throw bad(`phase must be one of ${JOURNAL_PHASES.join(', ')}`, phase);
  const handoffId = own(raw, 'handoffId');
  if (handoffId !== null && (typeof handoffId !== 'string' || handoffId.length === 0 || handoffId.length > FieldLimits.handoffIdMax)) {
    throw bad('handoffId must be a non-empty string or null', handoffId);
  }
  const writtenAt = own(raw, 'writtenAt');
  if (!isUint(writtenAt)) throw bad('writtenAt must be a timestamp in ms', writtenAt);
  const supervisorPid = own(raw, 'supervisorPid');
  if (!isUint(supervisorPid, FieldLimits.pidMax) || supervisorPid === 0) throw bad('supervisorPid must be a pid', supervisorPid);
  return {
    v: 1,
    phase: phase as JournalPhase,
    handoffId,
    writtenAt,
    supervisorPid,
    incumbent: parseProcess(own(raw, 'incumbent') ?? null, 'incumbent'),
    successor: parseProcess(own(raw, 'successor') ?? null, 'successor'),
    seal: parseSeal(own(raw, 'seal') ?? null),
    versions: parseVersions(own(raw, 'versions') ?? null),
    lastHandoff: parseLastHandoff(own(raw, 'lastHandoff') ?? null),
  };
}
