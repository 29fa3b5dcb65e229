/**
 * systemd's notification protocol (sd_notify(3)) without native code: every notification is
 * one run of the `systemd-notify` program with raw `VAR=VALUE` arguments.
 *
 * Why a program and not a socket: the notify socket is an AF_UNIX datagram socket, which
 * Node's `dgram` cannot open, and the barrier (below) needs an fd passed with SCM_RIGHTS,
 * which Node cannot send without an addon.
 *
 * What `systemd-notify` (systemd 252, Debian 12) does with `systemd-notify A=1 B=2`, as
 * measured against a stand-in receiver:
 *  - it sends `A=1\nB=2` as one datagram to `$NOTIFY_SOCKET`, then a second datagram
 *    `BARRIER=1` carrying the write end of a pipe, and waits (up to 5 s) until the receiver
 *    closes that fd. The barrier makes sure the service manager has read the message before
 *    the short-lived sender exits, so that it can still tell which unit the sender belongs
 *    to. Hence no `--no-block` here.
 *  - run as root it claims its parent's pid in SCM_CREDENTIALS for the first datagram (the
 *    process that ran it: this one); run as any other user the kernel refuses that and it
 *    falls back to its own pid. The barrier always comes from its own pid.
 *  - when anything fails (no socket, the barrier unanswered, bad arguments) it exits 1 and,
 *    when `$NOTIFY_SOCKET` is reachable, also sends `ERRNO=<errno>` there, which systemd
 *    records as the unit's StatusErrno.
 *  - a value is passed verbatim: a newline inside it would start another assignment, so
 *    {@link SystemdNotifier.send} replaces line breaks by spaces.
 *
 * Requirements of the unit (see packaging/systemd/handoff.service):
 *  - `Type=notify`: the unit is started once the supervisor sends READY=1.
 *  - `NotifyAccess=all`: the messages come from `systemd-notify` processes — from their
 *    own pid as a non-root user, from the supervisor as root — and the main pid systemd
 *    knows may be neither (the supervisor runs under a small keeper process), so `main` or
 *    `exec` would make systemd drop them.
 *  - `systemd-notify` installed (Debian: the `systemd` package, /usr/bin/systemd-notify).
 *    Without it, or without `$NOTIFY_SOCKET` (not started by systemd), the notifier is off
 *    and every method does nothing.
 *  - `WatchdogSec=` is optional: with it systemd sets `WATCHDOG_USEC` (and `WATCHDOG_PID`),
 *    and {@link SystemdNotifier.startWatchdog} pings at half that interval.
 *
 * The environment of the daemons the supervisor starts should not carry `NOTIFY_SOCKET` and
 * `WATCHDOG_*` on: with `NotifyAccess=all` a daemon that speaks sd_notify itself would be
 * heard as the service.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';

/** Options of {@link SystemdNotifier.fromEnv}. */
export interface SystemdNotifierOptions {
  /** Told about each failure, in one line. Default: a line on stderr. */
  readonly onError?: (message: string) => void;
  /** The `systemd-notify` program: a path, or a name looked up on the environment's PATH. Default `systemd-notify`. */
  readonly program?: string;
  /** How long one run of `systemd-notify` may take before it is killed. Default 10 s. */
  readonly timeoutMs?: number;
}

/** PATH when the environment has none (that of systemd's services). */
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const VARIABLE_NAME = /^[A-Z_][A-Z0-9_]*$/;
/** At most this much of `systemd-notify`'s stderr is kept for an error message. */
const STDERR_LIMIT = 4_096;

function isExecutableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The program's path: itself when it names a path, else the first executable file of that name on PATH. */
function findProgram(program: string, path: string | undefined): string | null {
  if (program.includes('/')) return isExecutableFile(program) ? program : null;
  for (const dir of (path ?? DEFAULT_PATH).split(':')) {
    if (!isAbsolute(dir)) continue; // '' and relative entries would depend on the working directory
    const candidate = join(dir, program);
    if (isExecutableFile(candidate)) return candidate;
  }
  return null;
}

function oneLine(text: string): string {
  return text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean).join('; ');
}

/** The state of CLOCK_MONOTONIC in µs, as systemd's `MONOTONIC_USEC=` wants it. */
export function monotonicUsec(): bigint {
  // Node's hrtime is libuv's uv_hrtime, clock_gettime(CLOCK_MONOTONIC) on Linux — the clock
  // of systemd's MONOTONIC_USEC. Checked: it agrees with /proc/uptime to its 10 ms
  // resolution (on a machine that never suspended; /proc/uptime is CLOCK_BOOTTIME, which
  // also counts suspended time), and lies between two readings of Python's
  // time.clock_gettime_ns(CLOCK_MONOTONIC) in another process.
  return process.hrtime.bigint() / 1000n;
}

/**
 * Tells systemd about the supervisor's state through `systemd-notify`. Sends run one at a
 * time in call order; each is bounded by a timeout; none throws — failures go to `onError`.
 * When not enabled (no `NOTIFY_SOCKET`, no `systemd-notify`) every method is a no-op.
 */
export class SystemdNotifier implements AsyncDisposable {
  readonly #socket: string | null;
  readonly #program: string | null;
  readonly #env: Readonly<Record<string, string>>;
  readonly #onError: (message: string) => void;
  readonly #timeoutMs: number;
  /** The watchdog interval systemd asked for, when it is meant for this process; else null. */
  readonly #watchdogUsec: number | null;
  /** The end of the queue: settles when the last send queued so far has finished. */
  #tail: Promise<void> = Promise.resolve();
  #pending = 0;
  #current: ChildProcess | null = null;
  #closed = false;
  /** Set when close() gave up waiting: what is still queued is dropped. */
  #abandoned = false;
  #watchdog: NodeJS.Timeout | null = null;
  #watchdogInFlight = false;

  private constructor(socket: string | null, program: string | null, env: Readonly<Record<string, string>>, options: SystemdNotifierOptions, watchdogUsec: number | null) {
    this.#socket = socket;
    this.#program = program;
    this.#env = env;
    this.#onError =
      options.onError ??
      ((message) => {
        process.stderr.write(`handoff-supervisor: ${message}\n`);
      });
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#watchdogUsec = watchdogUsec;
  }

  /**
   * A notifier for the service manager named by `env` (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
   * `WATCHDOG_PID`, `PATH`). Disabled when `NOTIFY_SOCKET` is unset or empty, or when the
   * program is not an executable file; the latter, with `NOTIFY_SOCKET` set, is reported
   * through `onError` (systemd waits for a READY=1 that will not come).
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env, options: SystemdNotifierOptions = {}): SystemdNotifier {
    const copy: Record<string, string> = {};
    for (const [k, v] of Object.entries(env)) if (v !== undefined) copy[k] = v;
    const socket = copy.NOTIFY_SOCKET ?? '';
    if (socket === '') return new SystemdNotifier(null, null, copy, options, null);
    const wanted = options.program ?? 'systemd-notify';
    const program = findProgram(wanted, copy.PATH);
    const notifier = new SystemdNotifier(program ? socket : null, program, copy, options, program ? watchdogFor(copy) : null);
    if (!program) {
      notifier.#onError(
        wanted.includes('/')
          ? `NOTIFY_SOCKET is set, but ${wanted} is not an executable file: systemd will not hear from this process`
          : `NOTIFY_SOCKET is set, but there is no executable ${wanted} on PATH (${copy.PATH ?? DEFAULT_PATH}): systemd will not hear from this process`,
      );
    }
    return notifier;
  }

  /** Whether notifications are sent at all. */
  get enabled(): boolean {
    return this.#socket !== null;
  }

  /** The path of the `systemd-notify` program in use, or null. */
  get program(): string | null {
    return this.#program;
  }

  /** Whether the watchdog timer runs. */
  get watchdogRunning(): boolean {
    return this.#watchdog !== null;
  }

  /**
   * Sends `vars` in one datagram (`systemd-notify VAR=VALUE …`), after every send called
   * before it. Resolves when `systemd-notify` has finished — the service manager has read
   * the message — or failed, or was killed at the timeout; never rejects. Does nothing when
   * disabled, after {@link close}, or when `vars` is empty.
   */
  send(vars: Readonly<Record<string, string>>): Promise<void> {
    if (!this.enabled || this.#closed) return Promise.resolve();
    const args: string[] = [];
    for (const [name, value] of Object.entries(vars)) {
      if (!VARIABLE_NAME.test(name)) {
        this.#onError(`systemd-notify: not a variable name: ${JSON.stringify(name)}; nothing sent`);
        return Promise.resolve();
      }
      args.push(`${name}=${value.replace(/[\r\n]+/g, ' ').replaceAll('\0', '')}`);
    }
    if (args.length === 0) return Promise.resolve();
    this.#pending++;
    // While the watchdog runs every notification is also a ping, taken when it is sent: a
    // burst of notifications (a handoff) queued ahead of a ping must not starve the watchdog.
    const run = this.#tail.then(() => this.#run(this.#watchdog !== null && !args.includes('WATCHDOG=1') ? [...args, 'WATCHDOG=1'] : args)).finally(() => {
      this.#pending--;
    });
    this.#tail = run;
    return run;
  }

  /** `READY=1` (start-up, or the end of a reload) with a status line, and `MAINPID=` when given. */
  ready(status: string, mainPid?: number): Promise<void> {
    return this.send({ READY: '1', STATUS: status, ...(mainPid !== undefined ? { MAINPID: String(mainPid) } : {}) });
  }

  /**
   * `RELOADING=1`, stamped `MONOTONIC_USEC=` with the time of this call, and a status line.
   * Send {@link ready} when the reload is over.
   */
  reloading(status: string): Promise<void> {
    return this.send({ RELOADING: '1', MONOTONIC_USEC: String(monotonicUsec()), STATUS: status });
  }

  /** `STOPPING=1` with a status line. */
  stopping(status: string): Promise<void> {
    return this.send({ STOPPING: '1', STATUS: status });
  }

  /** `STATUS=`: the line `systemctl status` shows. */
  status(text: string): Promise<void> {
    return this.send({ STATUS: text });
  }

  /** `EXTEND_TIMEOUT_USEC=`: asks for `ms` more from now before the start, stop or watchdog timeout. */
  extendTimeout(ms: number): Promise<void> {
    return this.send({ EXTEND_TIMEOUT_USEC: String(Math.max(0, Math.round(ms * 1000))) });
  }

  /** `MAINPID=`: the pid systemd should consider the service's main process. */
  mainPid(pid: number): Promise<void> {
    return this.send({ MAINPID: String(pid) });
  }

  /**
   * Pings `WATCHDOG=1` now and every `WATCHDOG_USEC`/2 (an unref'd timer), when systemd set
   * `WATCHDOG_USEC` for this process: `WATCHDOG_PID` unset, or this process, or its parent
   * (the keeper that systemd knows as the main process). A ping is skipped while the
   * previous one is still on its way, so a stalled manager does not make them pile up.
   */
  startWatchdog(): void {
    if (this.#watchdogUsec === null || this.#watchdog !== null || this.#closed) return;
    const ping = (): void => {
      if (this.#watchdogInFlight) return;
      this.#watchdogInFlight = true;
      void this.send({ WATCHDOG: '1' }).finally(() => {
        this.#watchdogInFlight = false;
      });
    };
    this.#watchdog = setInterval(ping, Math.max(1, Math.floor(this.#watchdogUsec / 2_000)));
    this.#watchdog.unref();
    ping();
  }

  stopWatchdog(): void {
    if (this.#watchdog !== null) clearInterval(this.#watchdog);
    this.#watchdog = null;
  }

  /**
   * Stops the watchdog and waits, at most `timeoutMs`, until the sends already called have
   * finished; after that the one running is killed and the rest dropped. Later sends do nothing.
   */
  async close(timeoutMs = this.#timeoutMs): Promise<void> {
    this.#closed = true;
    this.stopWatchdog();
    if (this.#pending === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => {
        resolve(true);
      }, timeoutMs);
    });
    const gaveUp = await Promise.race([this.#tail.then(() => false), expired]);
    clearTimeout(timer);
    if (gaveUp) {
      this.#abandoned = true;
      this.#current?.kill('SIGKILL');
      this.#onError(`systemd-notify: ${this.#pending} notification(s) still unsent after ${timeoutMs} ms; dropped`);
      await this.#tail;
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Runs `systemd-notify args…`; settles when it is done, whatever happened. */
  #run(args: readonly string[]): Promise<void> {
    const program = this.#program;
    const socket = this.#socket;
    if (this.#abandoned || program === null || socket === null) return Promise.resolve();
    const what = `systemd-notify ${args.map((a) => a.slice(0, a.indexOf('='))).join(' ')}`;
    return new Promise((resolve) => {
      let child: ChildProcess;
      try {
        child = spawn(program, args, { env: { ...this.#env, NOTIFY_SOCKET: socket }, stdio: ['ignore', 'ignore', 'pipe'] });
      } catch (error) {
        this.#onError(`${what} to ${socket}: could not start ${program}: ${oneLine((error as Error).message)}`);
        resolve();
        return;
      }
      this.#current = child;
      let stderr = '';
      let timedOut = false;
      let settled = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, this.#timeoutMs);
      const finish = (failure: string | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#current = null;
        if (failure !== null) this.#onError(failure);
        resolve();
      };
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
        if (stderr.length < STDERR_LIMIT) stderr += chunk.slice(0, STDERR_LIMIT - stderr.length);
      });
      child.once('error', (error) => {
        finish(`${what} to ${socket}: could not start ${program}: ${oneLine(error.message)}`);
      });
      child.once('close', (code, signal) => {
        if (timedOut) finish(`${what} to ${socket}: no answer within ${this.#timeoutMs} ms; killed`);
        else if (code === 0) finish(null);
        else {
          const how = signal !== null ? `killed by ${signal}` : `exit code ${String(code)}`;
          const said = oneLine(stderr);
          finish(`${what} to ${socket} failed (${how})${said ? `: ${said}` : ''}`);
        }
      });
    });
  }
}

/** `WATCHDOG_USEC` when systemd meant it for this process (see {@link SystemdNotifier.startWatchdog}), else null. */
function watchdogFor(env: Readonly<Record<string, string>>): number | null {
  const usec = env.WATCHDOG_USEC;
  if (usec === undefined || !/^\d+$/.test(usec) || Number(usec) <= 0) return null;
  const pid = env.WATCHDOG_PID;
  if (pid !== undefined && pid !== '' && pid !== String(process.pid) && pid !== String(process.ppid)) return null;
  return Number(usec);
}
