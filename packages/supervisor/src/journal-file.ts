/**
 * The journal on disk: one JSON record, replaced atomically and durably (write a temp file,
 * fsync it, rename it over the journal, fsync the directory) before each irreversible step.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { encodeJournal, parseJournal } from '@handoff/protocol';
import type { JournalRecord } from '@handoff/protocol';
import { SupervisorError, SupervisorErrorCode } from './errors.js';

/** The journal file of a supervisor. */
export class JournalFile {
  readonly path: string;

  constructor(path: string) {
    this.path = path;
  }

  /**
   * The record on disk; null when there is none. A damaged record is moved aside (to
   * `<path>.damaged-<time>`) and reported as null: recovery then relies on the lock and the
   * control socket alone.
   */
  read(): { record: JournalRecord | null; damaged: string | null } {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { record: null, damaged: null };
      throw new SupervisorError(SupervisorErrorCode.Journal, `cannot read the journal ${this.path}: ${(error as Error).message}`, { cause: error });
    }
    try {
      return { record: parseJournal(text), damaged: null };
    } catch (error) {
      const aside = `${this.path}.damaged-${Date.now()}`;
      renameSync(this.path, aside);
      return { record: null, damaged: `${(error as Error).message} (moved to ${aside})` };
    }
  }

  /** Replaces the record durably. Synchronous on purpose: nothing may happen before it is on disk. */
  write(record: JournalRecord): void {
    const dir = dirname(this.path);
    const tmp = join(dir, `.${basename(this.path)}.${process.pid}.tmp`);
    let text: string;
    try {
      text = encodeJournal(record);
    } catch (error) {
      throw new SupervisorError(SupervisorErrorCode.Journal, `cannot write the journal ${this.path}: the record is not valid (${(error as Error).message}); this is a bug of the supervisor`, { cause: error });
    }
    try {
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeSync(fd, text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
      const dirFd = openSync(dir, 'r');
      try {
        fsyncSync(dirFd);
      } finally {
        closeSync(dirFd);
      }
    } catch (error) {
      throw new SupervisorError(SupervisorErrorCode.Journal, `cannot write the journal ${this.path}: ${(error as Error).message}; check the disk and the directory's permissions`, { cause: error });
    }
  }
}
