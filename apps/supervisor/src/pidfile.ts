/**
 * The single-instance guard: the pid file is
 * created atomically (O_CREAT|O_EXCL); a live supervisor owning it makes a second one refuse
 * loudly (naming its pid, which `--force` deals with: force.ts); a pid file whose process is
 * gone, or was reused by a process that is not a handoff supervisor, is reclaimed.
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { isAlive } from '@handoff/supervisor/internal';
import { AlreadyRunningError } from './errors.js';


function readPid(path: string): number | null {
  try {
    const text = readFileSync(path, 'utf8').trim();
    return /^\d+$/.test(text) ? Number(text) : null;
  } catch {
    return null;
  }
}

/** True when `pid` runs a handoff supervisor (its program or script is our entry point). */
export function isSupervisorProcess(pid: number): boolean {
  try {
    // The program itself (a direct exec) or the script node runs: never any later argument.
    const [program, script] = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return [program, script].some((a) => a !== undefined && (/(^|\/)handoff-supervisor$/.test(a) || /supervisor(-cli)?[/\\]dist[/\\]main\.js$/.test(a)));
  } catch {
    return false;
  }
}

/** The pid file held by this process. */
export class PidFile {
  readonly path: string;

  private constructor(path: string) {
    this.path = path;
  }

  /**
   * Creates the pid file, or refuses, or reclaims a stale one.
   * @throws AlreadyRunningError when a live supervisor owns it.
   */
  static acquire(path: string): PidFile {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const fd = openSync(path, 'wx', 0o644);
        try {
          writeSync(fd, `${process.pid}\n`);
        } finally {
          closeSync(fd);
        }
        return new PidFile(path);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== 'EEXIST') {
          const why = code === 'ENOENT' ? `its directory ${dirname(path)} does not exist` : code === 'EACCES' || code === 'EPERM' ? `this user may not write in ${dirname(path)}` : (error as Error).message;
          throw new Error(`cannot create the pid file ${path} (${code ?? 'error'}): ${why}; create that directory, or set [supervisor] pid_file to a path in a writable one`, { cause: error });
        }
      }
      const pid = readPid(path);
      if (pid !== null && pid !== process.pid && isAlive(pid) && isSupervisorProcess(pid)) {
        throw new AlreadyRunningError(
          `another handoff supervisor is running (pid ${pid}, pid file ${path}); stop it with "handoffctl stop", or start this one with --force to take over`,
          pid,
        );
      }
      // Stale (its process is gone, or the pid was reused by something else): reclaim it.
      try {
        unlinkSync(path);
      } catch {
        // raced with another starter; the next attempt decides
      }
    }
    throw new Error(`could not take the pid file ${path}: other supervisors keep starting; retry`);
  }

  /** The live supervisor that owns `path`, if any (a check before detaching; {@link acquire} decides). */
  static liveOwner(path: string): number | null {
    const pid = readPid(path);
    return pid !== null && pid !== process.pid && isAlive(pid) && isSupervisorProcess(pid) ? pid : null;
  }

  /** Removes the pid file if it still names this process. */
  release(): void {
    if (readPid(this.path) !== process.pid) return;
    try {
      unlinkSync(this.path);
    } catch {
      // gone
    }
  }
}
