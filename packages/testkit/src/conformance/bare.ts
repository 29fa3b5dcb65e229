/**
 * The daemon under test started by hand, without a supervisor, exactly as the spawn contract
 * starts a cold start (PROTOCOL.md section 2): for the checks of the daemon alone — its
 * listeners, its Hello, its lock, its handling of bad frames.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { FrameDecoder, SpawnEnv } from '@handoff/protocol';
import type { Hello } from '@handoff/protocol';
import { bindListeners } from '@handoff/supervisor';
import type { HeldListener } from '@handoff/supervisor';
import { spawnWithListenPid } from '@handoff/supervisor/internal';
import { waitUntil } from '../wait.js';

/** The daemon program under test. */
export interface Program {
  readonly command: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly cwd?: string | undefined;
}

/** Variables the kit sets for every daemon so that it finds its data directory (`HANDOFF_DATA_DIR` is the contract's; `KV_DATA_DIR` is what older example daemons read). */
export function dataDirEnv(dataDir: string): Record<string, string> {
  return { HANDOFF_DATA_DIR: dataDir, KV_DATA_DIR: dataDir };
}

/** The supervisor's heartbeat interval the kit announces (HANDOFF_HEARTBEAT_MS), and keeps when it plays the supervisor. */
export const BARE_HEARTBEAT_MS = 100;

/** A daemon started by hand with one inherited listener, in its own process group. */
export class BareDaemon {
  readonly child: ChildProcess;
  readonly port: number;
  readonly controlSocket: string;
  /** The listener it inherited (the kit's copy). */
  readonly listener: HeldListener;
  /** A successor's end of its channel to the kit (PROTOCOL.md §2), or null for a cold start. */
  readonly channel: ControlClient | null;
  readonly #close: () => void;
  #output = '';
  #exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  /**
   * Starts `program` as a cold start on `dataDir` with `controlSocket`; with `successorOf`, as
   * that daemon's successor, on its listener, with a channel to the kit (the kit then plays
   * the supervisor on {@link channel}).
   * @throws SupervisorError HANDOFF_SPAWN when the command or its working directory does not exist.
   */
  constructor(program: Program, dataDir: string, controlSocket: string, tag: Readonly<Record<string, string>>, successorOf?: BareDaemon) {
    let listener: HeldListener;
    if (successorOf) {
      listener = successorOf.listener;
      this.#close = () => undefined;
    } else {
      const held = bindListeners([{ name: 'http', host: '127.0.0.1', port: 0 }]);
      this.#close = () => {
        held.close();
      };
      listener = held.listeners[0] as HeldListener;
    }
    this.listener = listener;
    this.port = Number(listener.address.split(':').pop());
    this.controlSocket = controlSocket;
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !(Object.values(SpawnEnv) as string[]).includes(k)) env[k] = v;
    Object.assign(env, program.env, dataDirEnv(dataDir), tag, {
      [SpawnEnv.ListenFds]: '1',
      [SpawnEnv.ListenFdNames]: 'http',
      // One reserve copy (fd 4): a drain that the check then aborts must be able to accept again (§2).
      [SpawnEnv.ReserveCopies]: '1',
      [SpawnEnv.ControlSocket]: controlSocket,
      [SpawnEnv.HeartbeatMs]: String(BARE_HEARTBEAT_MS),
      [SpawnEnv.LivenessMs]: '1000',
      [SpawnEnv.Backlogs]: '511',
      // A successor's work before its Hello (a preload) gets as long as the supervisor's default.
      [SpawnEnv.HelloMs]: '10000',
    });
    // fds 3 and 4: the listener and its reserve copy; a successor's channel at fd 5.
    const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'pipe', 'pipe', listener.fd, listener.fd];
    if (successorOf) {
      env[SpawnEnv.Role] = 'successor';
      env[SpawnEnv.SockFd] = String(stdio.length);
      stdio.push('pipe');
    }
    try {
      this.child = spawnWithListenPid({ command: program.command, args: [...program.args], env: {}, cwd: program.cwd ?? null }, { env, stdio, detached: true });
    } catch (error) {
      this.#close();
      throw error;
    }
    const channel = successorOf ? ((this.child.stdio as readonly unknown[])[5] as Socket | null) : null;
    this.channel = channel ? ControlClient.over(channel) : null;
    this.child.stdout?.on('data', (d: Buffer) => (this.#output += d.toString()));
    this.child.stderr?.on('data', (d: Buffer) => (this.#output += d.toString()));
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        resolve({ code, signal });
      });
    });
    // The listener now lives in the child; our copy only keeps the port reserved.
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  /** Its exit, once it exited. */
  get exit(): { code: number | null; signal: NodeJS.Signals | null } | null {
    return this.#exit;
  }

  output(): string {
    return this.#output;
  }

  /** Its last non-empty line of output, for one-line reports. */
  lastLine(): string {
    return this.#output.split('\n').map((l) => l.trim()).filter((l) => l !== '').at(-1) ?? '(no output)';
  }

  /** Kills its process group and closes our copy of the listener (a successor's listener is its predecessor's: left open). */
  kill(): void {
    const pid = this.child.pid;
    if (pid !== undefined && this.#exit === null) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    this.channel?.destroy();
    this.#close();
  }
}

/** One connection to a control socket: what the daemon sent (decoded), and whether it closed. */
export class ControlClient {
  readonly socket: Socket;
  readonly #decoder = new FrameDecoder({ direction: 'toSupervisor' });
  readonly frames: { ok: boolean; message?: unknown; error?: string }[] = [];
  #closed = false;
  readonly closedAt: Promise<void>;
  #error: string | null = null;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      for (const r of this.#decoder.push(new Uint8Array(chunk))) {
        this.frames.push(r.ok ? { ok: true, message: r.message } : { ok: false, error: `${r.error.code}: ${r.error.message}` });
      }
    });
    this.closedAt = new Promise((resolve) => {
      socket.once('close', () => {
        this.#closed = true;
        resolve();
      });
    });
    socket.on('error', (e) => (this.#error = e.message));
  }

  /** The kit's end of a successor's channel. */
  static over(socket: Socket): ControlClient {
    return new ControlClient(socket);
  }

  /** Connects to `path`; rejects when nothing accepts there. */
  static connect(path: string, timeoutMs = 3_000): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection to ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new ControlClient(socket));
      });
      socket.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`cannot connect to the control socket ${path}: ${e.message}`));
      });
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  get error(): string | null {
    return this.#error;
  }

  /** Waits for the first frame, up to `timeoutMs`. */
  async first(timeoutMs = 3_000): Promise<{ ok: boolean; message?: unknown; error?: string } | null> {
    await waitUntil('a first frame', () => this.frames.length > 0 || this.#closed, timeoutMs, { everyMs: 10 }).catch(() => undefined);
    return this.frames[0] ?? null;
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Resolves true when the daemon closed the connection within `timeoutMs`. */
  async closesWithin(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => {
        resolve(false);
      }, timeoutMs);
    });
    const result = await Promise.race([this.closedAt.then(() => true as const), timedOut]);
    clearTimeout(timer);
    return result;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Null when `message` is a valid Hello of `role` from `pid`, else what is wrong with it. */
export function helloProblem(first: { ok: boolean; message?: unknown; error?: string } | null, role: 'incumbent' | 'successor', pid: number): string | null {
  if (first === null) return 'the daemon sent nothing on a new control connection (its first message MUST be Hello)';
  if (!first.ok) return `its first frame is not a valid message: ${first.error ?? '?'}`;
  const m = first.message as { type: string } & Partial<Omit<Hello, 'type'>>;
  if (m.type !== 'Hello') return `its first message is ${m.type}, not Hello`;
  const problems: string[] = [];
  if (m.role !== role) problems.push(`role ${JSON.stringify(m.role)} (expected ${role})`);
  if (m.pid !== pid) problems.push(`pid ${String(m.pid)} is not the process's (${pid})`);
  if ((m.protoMin ?? 0) > (m.protoMax ?? 0)) problems.push(`protoMin ${String(m.protoMin)} > protoMax ${String(m.protoMax)}`);
  if ((m.protoMin ?? 0) > 1 || (m.protoMax ?? 0) < 1) problems.push(`range ${String(m.protoMin)}..${String(m.protoMax)} does not include version 1`);
  return problems.length ? `Hello: ${problems.join('; ')}` : null;
}

/** The kinds of kernel locks on `<dataDir>/.handoff.lock`, as /proc/locks lists them (`POSIX`, `OFDLCK`, `FLOCK`), with the pid column. */
export function procLocks(dataDir: string): { kind: string; mode: string; pid: number }[] {
  let inode: number;
  let text: string;
  try {
    inode = statSync(join(dataDir, '.handoff.lock')).ino;
    text = readFileSync('/proc/locks', 'utf8');
  } catch {
    return [];
  }
  const out: { kind: string; mode: string; pid: number }[] = [];
  // "1: OFDLCK ADVISORY  WRITE -1 fe:00:2146477 0 EOF"
  for (const m of text.matchAll(/^\d+: (?:-> )?(\w+)\s+\w+\s+(\w+)\s+(-?\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+) /gm)) {
    if (Number(m[4]) === inode) out.push({ kind: m[1] ?? '', mode: m[2] ?? '', pid: Number(m[3]) });
  }
  return out;
}
