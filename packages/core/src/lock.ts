/**
 * The data-directory lock (PROTOCOL.md section 14): an exclusive open-file-description fcntl
 * lock on `<dataDir>/.handoff.lock`, which the kernel releases when the holder dies (SIGKILL
 * included; measured here: about 2 ms). It conflicts with the classic POSIX record locks
 * other languages take (Python's `fcntl.lockf`, Go's `FcntlFlock`), not with `flock(2)`. A
 * pid file beside it, `<dataDir>/.handoff.pid`, says who holds it.
 */
import { closeSync, openSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fsx from 'fs-native-extensions';
import { CoreError, CoreErrorCode } from './errors.js';
import { messageOf } from '@handoff/protocol/internal';

/** The lock file's name inside the data directory. */
export const LOCK_FILE = '.handoff.lock';
/** The pid file's name inside the data directory. */
export const PID_FILE = '.handoff.pid';

/** Who holds a lock, as far as the pid file and the kernel tell. */
export interface LockProbe {
  /** Whether some process (this one included, through another open) holds the kernel lock. */
  readonly held: boolean;
  /** The pid the pid file names, if any. */
  readonly pid: number | null;
  /** Whether that pid is alive. */
  readonly pidAlive: boolean;
}

/** A kind of kernel file lock: open-file-description and classic POSIX record locks conflict with each other; `flock(2)` locks with neither. */
export type LockKind = 'ofd' | 'posix' | 'flock';

const LOCK_KINDS: Readonly<Record<string, LockKind>> = { OFDLCK: 'ofd', POSIX: 'posix', FLOCK: 'flock' };

/**
 * The write locks process `pid` holds on `<dataDir>/.handoff.lock`, by kind, as the kernel
 * shows them in `/proc/<pid>/fdinfo` (Linux); null when that cannot be read (another OS, another
 * user, the process gone, no lock file).
 */
export function lockKindsHeldBy(pid: number, dataDir: string): LockKind[] | null {
  let file: { dev: number; ino: number };
  let fds: string[];
  try {
    file = statSync(join(dataDir, LOCK_FILE));
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return null;
  }
  const kinds = new Set<LockKind>();
  for (const fd of fds) {
    let info: string;
    try {
      // Only the fds open on the lock file itself (same device and inode).
      const open = statSync(`/proc/${pid}/fd/${fd}`);
      if (open.dev !== file.dev || open.ino !== file.ino) continue;
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // closed meanwhile
    }
    // "lock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:2146477 0 EOF": kind, mode, pid, dev:inode, range.
    for (const m of info.matchAll(/^lock:\s+\d+: (\w+)\s+\w+\s+WRITE\s+-?\d+\s+[0-9a-f]+:[0-9a-f]+:(\d+) /gm)) {
      const kind = LOCK_KINDS[m[1] ?? ''];
      if (kind && Number(m[2]) === file.ino) kinds.add(kind);
    }
  }
  return [...kinds];
}

/** Options of {@link DataDirLock.acquire}. */
export interface AcquireOptions {
  /** Keep trying this long while another process holds the lock. Default 0 (try once). */
  readonly waitMs?: number;
  /** Interval between tries. Default 5 ms. */
  readonly retryMs?: number;
  /** Gives up early when aborted. */
  readonly signal?: AbortSignal;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(dataDir: string): number | null {
  try {
    const text = readFileSync(join(dataDir, PID_FILE), 'utf8').trim();
    return /^\d+$/.test(text) ? Number(text) : null;
  } catch {
    return null;
  }
}

function openLockFile(dataDir: string): number {
  try {
    return openSync(join(dataDir, LOCK_FILE), 'a+', 0o600);
  } catch (cause) {
    throw new CoreError(CoreErrorCode.LockFailed, `cannot open the lock file in ${dataDir}: ${messageOf(cause)}; check that the data directory exists and is writable`, { cause });
  }
}

function tryLock(fd: number, dataDir: string): boolean {
  try {
    return fsx.tryLock(fd);
  } catch (cause) {
    throw new CoreError(CoreErrorCode.LockFailed, `cannot lock ${join(dataDir, LOCK_FILE)}: ${messageOf(cause)}`, { cause });
  }
}

/** Lifecycle of a {@link DataDirLock}: `held` until `release()`, then `released`. */
export type LockState = 'held' | 'released';

/** An exclusive kernel lock on a data directory, held by this process. */
export class DataDirLock {
  readonly dataDir: string;
  #fd: number;
  #state: LockState = 'held';

  private constructor(dataDir: string, fd: number) {
    this.dataDir = dataDir;
    this.#fd = fd;
  }

  /** `held` or `released`. */
  get state(): LockState {
    return this.#state;
  }

  /**
   * Takes the lock, waiting up to `waitMs` while another process holds it, and writes this
   * process's pid to the pid file.
   * @throws CoreError HANDOFF_LOCK_HELD naming the holder; HANDOFF_LOCK_FAILED on I/O errors.
   */
  static async acquire(dataDir: string, options: AcquireOptions = {}): Promise<DataDirLock> {
    const deadline = Date.now() + (options.waitMs ?? 0);
    const fd = openLockFile(dataDir);
    try {
      for (;;) {
        if (tryLock(fd, dataDir)) {
          const lock = new DataDirLock(dataDir, fd);
          lock.#writePid();
          return lock;
        }
        if (Date.now() >= deadline || options.signal?.aborted) break;
        await new Promise((resolve) => setTimeout(resolve, options.retryMs ?? 5));
      }
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    closeSync(fd);
    const holder = readPid(dataDir);
    const who = holder === null ? 'another process (no pid file)' : `pid ${holder}${isAlive(holder) ? ' (alive)' : ' (not alive: the pid file is stale)'}`;
    throw new CoreError(
      CoreErrorCode.LockHeld,
      `the data directory ${dataDir} is locked by ${who}; only one daemon may write it — stop that process, or let the supervisor hand off to this one`,
    );
  }

  /**
   * Takes the lock at start-up. A kernel lock cannot outlive its holder, so "stale" here means
   * the pid file names a process that is gone while the kernel is still tearing it down: then
   * this waits up to `staleWaitMs` (default 2 s) for the lock to free. A live holder fails at once.
   * @throws CoreError HANDOFF_LOCK_HELD when a live process holds it.
   */
  static async acquireOrBreakStale(dataDir: string, options: AcquireOptions & { readonly staleWaitMs?: number } = {}): Promise<DataDirLock> {
    const probe = DataDirLock.probe(dataDir);
    const stale = probe.held && probe.pid !== null && !probe.pidAlive;
    return DataDirLock.acquire(dataDir, { ...options, waitMs: stale ? (options.staleWaitMs ?? 2_000) : (options.waitMs ?? 0) });
  }

  /** Who holds the lock of `dataDir` now (taking and dropping it when free). */
  static probe(dataDir: string): LockProbe {
    const fd = openLockFile(dataDir);
    try {
      const free = tryLock(fd, dataDir);
      if (free) fsx.unlock(fd);
      const pid = readPid(dataDir);
      return { held: !free, pid, pidAlive: pid !== null && isAlive(pid) };
    } finally {
      closeSync(fd);
    }
  }

  /** Releases the lock (the pid file stays, for messages). Idempotent. */
  release(): void {
    if (this.#state === 'released') return;
    this.#state = 'released';
    try {
      fsx.unlock(this.#fd);
    } finally {
      closeSync(this.#fd);
      this.#fd = -1;
    }
  }

  #writePid(): void {
    const tmp = join(this.dataDir, `${PID_FILE}.${process.pid}.tmp`);
    writeFileSync(tmp, `${process.pid}\n`);
    renameSync(tmp, join(this.dataDir, PID_FILE));
  }
}
