/**
 * The data-directory lock: an exclusive open-file-description fcntl lock on
 * `<dataDir>/.handoff.lock`, which the kernel releases when the holder dies (SIGKILL
 * included; measured here: about 2 ms). A pid file beside it, `<dataDir>/.handoff.pid`,
 * says who holds it — for messages only, never for deciding.
 */
import { closeSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
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
