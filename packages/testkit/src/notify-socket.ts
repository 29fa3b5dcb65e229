/**
 * A stand-in for systemd's notify socket, to test what a process tells the service manager
 * through `$NOTIFY_SOCKET` (sd_notify(3)): a `python3` process (standard library only, the
 * script given with `-c`) binds an AF_UNIX datagram socket at `<dir>/notify.sock` and prints
 * each datagram it receives as one JSON line. Node cannot do it itself: `dgram` has no
 * AF_UNIX, and answering a barrier means receiving an fd (SCM_RIGHTS).
 *
 * A `BARRIER=1` datagram (sd_notify_barrier(3), what `systemd-notify` sends after each
 * message and waits on) is answered as systemd answers it — by closing the fd it carries —
 * counted in {@link NotifySocket.barriers}, and left out of {@link NotifySocket.messages}.
 * python exits when it is killed or when its stdin closes (this process died), so nothing
 * outlives the test:
 *
 *     await using notify = await NotifySocket.open(dir);
 *     spawn('systemd-notify', ['READY=1'], { env: { NOTIFY_SOCKET: notify.path } });
 *     await notify.waitFor((m) => m.READY === '1');
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { waitForValue, waitUntil } from './wait.js';

/** One datagram, as the receiver saw it. */
export interface NotifyDatagram {
  /** Its `VAR=VALUE` lines, by variable (a line without `=` maps to ''). */
  readonly vars: Record<string, string>;
  /** The receiver's CLOCK_MONOTONIC (`time.monotonic_ns()`) when it arrived, in µs. */
  readonly monotonicUsec: number;
  /** The sender's pid from SCM_CREDENTIALS (what systemd goes by), or null. */
  readonly pid: number | null;
  /** How many fds came with it (closed by the receiver). */
  readonly fds: number;
}

// Waits on the socket and on stdin; an end of stdin means the test process is gone.
const RECEIVER = String.raw`
import json, os, select, socket, struct, sys, time

path = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
sock.bind(path)
ANCILLARY = socket.CMSG_SPACE(253 * 4) + socket.CMSG_SPACE(struct.calcsize('iII'))
stdin = sys.stdin.fileno()
while True:
    ready, _, _ = select.select([sock, stdin], [], [])
    if stdin in ready and not os.read(stdin, 4096):
        sys.exit(0)
    if sock not in ready:
        continue
    data, ancdata, flags, _ = sock.recvmsg(65536, ANCILLARY)
    at = time.monotonic_ns() // 1000
    fds, pid = [], None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            n = len(payload) // 4
            fds.extend(struct.unpack('%di' % n, payload[:n * 4]))
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack('iII', payload[:struct.calcsize('iII')])[0]
    for fd in fds:
        os.close(fd)
    variables = {}
    for line in data.decode('utf-8', 'replace').split('\n'):
        if line:
            name, _, value = line.partition('=')
            variables[name] = value
    sys.stdout.write(json.dumps({'vars': variables, 'monotonicUsec': at, 'pid': pid, 'fds': len(fds)}) + '\n')
    sys.stdout.flush()
`;

function isBarrier(d: NotifyDatagram): boolean {
  const names = Object.keys(d.vars);
  return names.length === 1 && d.vars.BARRIER === '1';
}

/** A notify socket that records what it receives. Close it (or `await using`) to kill python and remove the socket. */
export class NotifySocket implements AsyncDisposable {
  /** The socket's path: the value for `NOTIFY_SOCKET`. */
  readonly path: string;
  /** Every datagram but the barriers, in the order received. */
  readonly datagrams: NotifyDatagram[] = [];
  /** The variables of each datagram but the barriers, in the order received. */
  readonly messages: Record<string, string>[] = [];
  /** How many barriers were answered. */
  barriers = 0;
  readonly #python: ChildProcess;
  #stderr = '';
  #exit: string | null = null;

  private constructor(path: string, python: ChildProcess) {
    this.path = path;
    this.#python = python;
    let partial = '';
    python.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      partial += chunk;
      for (let i = partial.indexOf('\n'); i >= 0; i = partial.indexOf('\n')) {
        const line = partial.slice(0, i);
        partial = partial.slice(i + 1);
        try {
          this.#receive(JSON.parse(line) as NotifyDatagram);
        } catch {
          this.#stderr += `unexpected output: ${line}\n`;
        }
      }
    });
    python.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.#stderr += chunk));
    python.once('exit', (code, signal) => (this.#exit = signal ?? String(code)));
    python.once('error', (error) => (this.#exit = error.message));
  }

  /** python's pid. */
  get pid(): number | undefined {
    return this.#python.pid;
  }

  /** Binds `<dir>/notify.sock`; resolves once the socket exists. */
  static async open(dir: string, timeoutMs = 10_000): Promise<NotifySocket> {
    const path = join(dir, 'notify.sock');
    const python = spawn('python3', ['-c', RECEIVER, path], { stdio: ['pipe', 'pipe', 'pipe'] });
    const socket = new NotifySocket(path, python);
    try {
      await waitUntil(
        `python3 to bind ${path}`,
        () => {
          if (socket.#exit !== null) throw new Error(`the notify-socket receiver (python3) exited (${socket.#exit}) before binding ${path}\n${socket.#stderr}`);
          return existsSync(path);
        },
        timeoutMs,
        { context: () => socket.#stderr },
      );
    } catch (error) {
      await socket.close();
      throw error;
    }
    return socket;
  }

  #receive(datagram: NotifyDatagram): void {
    if (isBarrier(datagram)) {
      this.barriers++;
      return;
    }
    this.datagrams.push(datagram);
    this.messages.push(datagram.vars);
  }

  /** What was received, for error messages. */
  describe(): string {
    const lines = this.messages.map((m, i) => `  ${i}: ${JSON.stringify(m)}`);
    const exit = this.#exit === null ? '' : `\nthe receiver exited (${this.#exit})${this.#stderr ? `: ${this.#stderr}` : ''}`;
    return `received ${this.messages.length} message(s) and ${this.barriers} barrier(s) on ${this.path}${lines.length ? `:\n${lines.join('\n')}` : ''}${exit}`;
  }

  /** The first message (received before or after the call) that satisfies `predicate`; rejects after `timeoutMs` with what was received. */
  waitFor(predicate: (message: Record<string, string>) => boolean, timeoutMs = 10_000): Promise<Record<string, string>> {
    return waitForValue(
      `a notify message matching ${predicate.toString()}`,
      () => {
        const found = this.messages.find(predicate);
        if (!found && this.#exit !== null) throw new Error(`the notify-socket receiver exited (${this.#exit}) while waiting; ${this.describe()}`);
        return found;
      },
      timeoutMs,
      { context: () => this.describe() },
    );
  }

  /** Kills python, waits until it is gone, and removes the socket. */
  async close(): Promise<void> {
    const python = this.#python;
    if (this.#exit === null && python.exitCode === null && python.signalCode === null) {
      python.kill('SIGKILL');
      await waitUntil('the notify-socket receiver (python3) to exit', () => this.#exit !== null, 5_000);
    }
    rmSync(this.path, { force: true });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
