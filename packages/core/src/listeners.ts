/**
 * Listening sockets inherited by fd, by name. Each may come with reserve copies (other fds
 * of the same socket), because closing a Node server closes its fd: a drained daemon that
 * must accept again (after an abort) listens on the next copy. Once the last copy is in use,
 * a new one is made (Node has no dup(2): a short-lived child inherits the fd and sends it back
 * over IPC), so a process accepts again after any number of aborted handoffs.
 */
import { spawn } from 'node:child_process';
import { Socket } from 'node:net';
import type { Server } from 'node:net';
import { CoreError, CoreErrorCode } from './errors.js';

/** Default accept backlog; it must cover connects that arrive while nobody accepts. */
export const DEFAULT_BACKLOG = 511;

/** A raw libuv handle (TCP or pipe wrap) received over IPC: a copy of a listening socket. */
interface RawHandle {
  readonly fd: number;
}

/** What a copy of the socket is: an inherited fd, or a handle received from a child. */
type Copy = number | RawHandle;

const fdOf = (copy: Copy): number => (typeof copy === 'number' ? copy : copy.fd);

/**
 * The child that makes a copy: it wraps fd 3 (inherited) without reading it and sends the
 * raw handle back — the kernel gives the receiver a new fd of the same socket.
 */
const COPY_CHILD = "const s = new (require('node:net').Socket)({ fd: 3, readable: false, writable: false }); process.send('copy', s._handle, () => process.disconnect());";

/** A new copy of the socket open at `fd` in this process (see the module comment). */
function copyOf(fd: number, timeoutMs = 10_000): Promise<RawHandle> {
  return new Promise((resolve, reject) => {
    // No environment of ours: the child is plain node and must not take this daemon's variables for its own.
    const child = spawn(process.execPath, ['-e', COPY_CHILD], { stdio: ['ignore', 'ignore', 'pipe', fd, 'ipc'], env: {} });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('message', (_message, handle: RawHandle | undefined) => {
      if (handle && typeof handle.fd === 'number' && handle.fd >= 0) resolve(handle);
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      // After a resolve this is a no-op; otherwise the child failed.
      reject(new Error(`the copying child ended (${signal ?? `exit code ${String(code)}`}) without sending a copy${stderr ? `: ${stderr.trim().split('\n').at(-1) ?? ''}` : ''}`));
    });
  });
}

/** One inherited listening socket and its unused copies. */
export class InheritedListener {
  readonly name: string;
  /** The backlog the supervisor asked for, used when `listen` is given none. */
  readonly backlog: number;
  readonly #copies: Copy[];
  #inUse: number | null = null;
  /** A copy being made (the last one is in use), or null. */
  #making: Promise<void> | null = null;
  /** Why the last attempt to make a copy failed, or null. */
  #makeFailed: string | null = null;
  /** Handles received as copies: kept referenced for the life of the process (one may share its fd with a server's own wrap). */
  readonly #received: RawHandle[] = [];

  constructor(name: string, fd: number, reserves: readonly number[], backlog = DEFAULT_BACKLOG) {
    this.name = name;
    this.backlog = backlog;
    this.#copies = [fd, ...reserves];
  }

  /**
   * An fd of this socket that is open in this process, to pass to a child: an unused copy
   * when one is left (never closed by this process), else the one a server listens on.
   */
  get openFd(): number | null {
    const unused = this.#copies.at(-1);
    return unused === undefined ? this.#inUse : fdOf(unused);
  }

  /** Copies left to listen on (the first call to {@link listen} uses one; a new one is made when none is left). */
  get copiesLeft(): number {
    return this.#copies.length;
  }

  /** Makes a copy of the fd in use when none is left: the next abort can listen again. */
  #replenish(): void {
    const inUse = this.#inUse;
    if (this.#copies.length > 0 || this.#making || inUse === null) return;
    this.#making = copyOf(inUse)
      .then((handle) => {
        this.#received.push(handle);
        this.#copies.push(handle);
        this.#makeFailed = null;
      })
      .catch((error: unknown) => {
        this.#makeFailed = error instanceof Error ? error.message : String(error);
      })
      .finally(() => {
        this.#making = null;
      });
  }

  /**
   * Makes `server` accept on the next unused copy of this socket, with `backlog` honoured.
   * @throws CoreError HANDOFF_NO_RESERVE when every copy was used in this process.
   */
  async listen(server: Server, backlog = this.backlog): Promise<void> {
    if (this.#copies.length === 0) await this.#making;
    const copy = this.#copies.shift();
    if (copy === undefined) {
      throw new CoreError(
        CoreErrorCode.NoReserve,
        `listener "${this.name}": every copy of the socket has been used and no new one could be made (${this.#makeFailed ?? 'none was in use to copy'}); this process cannot accept on it again — restart the daemon (a cold start) or give it more copies (HANDOFF_RESERVE_COPIES)`,
      );
    }
    const fd = fdOf(copy);
    this.#inUse = fd;
    // A received TCP handle is listened on as it is; an fd (or a received pipe's) is wrapped and checked.
    const handle = typeof copy !== 'number' && copy.constructor.name === 'TCP' ? copy : this.#open(fd);
    await new Promise<void>((resolve, reject) => {
      const onError = (error: NodeJS.ErrnoException): void => {
        reject(new CoreError(CoreErrorCode.EnvInvalid, `listener "${this.name}" (fd ${fd}): cannot listen on the inherited socket (${error.code ?? error.message}); it must be a bound stream socket, as handoff-supervisor and systemd pass them`, { cause: error }));
      };
      server.once('error', onError);
      // listen(handle, backlog, cb) honours the backlog; listen({ fd, backlog }) does not.
      server.listen(handle, backlog, () => {
        server.off('error', onError);
        resolve();
      });
    });
    this.#replenish();
  }

  /**
   * Wraps `fd` (without reading from it) to check, before anything listens on it, that a TCP
   * socket is bound: listen(2) on an unbound one would bind it to a random port on every
   * interface, and the daemon would serve where nobody connects. Returns what the server is
   * to listen on: a TCP socket's wrapper; for a Unix socket, the fd (its wrapper is left
   * unused: closing it would close the fd; listen(2) fails on an unbound Unix socket anyway).
   * @throws CoreError HANDOFF_ENV_INVALID when the fd is not a stream socket, or a TCP socket bound to no address.
   */
  #open(fd: number): Socket | { readonly fd: number } {
    let socket: Socket;
    try {
      socket = new Socket({ fd, readable: false, writable: false });
    } catch (cause) {
      throw new CoreError(CoreErrorCode.EnvInvalid, `listener "${this.name}" (fd ${fd}) is not a stream socket (${(cause as NodeJS.ErrnoException).code ?? String(cause)}); the process that started this one must pass listening sockets`, { cause });
    }
    const address = socket.address();
    if (!('port' in address)) return { fd };
    if (address.port === 0) {
      throw new CoreError(
        CoreErrorCode.EnvInvalid,
        `listener "${this.name}" (fd ${fd}) is a TCP socket bound to no address: listening on it would take a random port on every interface, so this process refuses; the process that started it must bind the socket first (handoff-supervisor and systemd do)`,
      );
    }
    return socket;
  }
}

/** The listeners a process inherited, by name. */
export class InheritedListeners {
  readonly #byName = new Map<string, InheritedListener>();

  constructor(entries: readonly { readonly name: string; readonly fd: number; readonly reserves: readonly number[]; readonly backlog?: number }[] = []) {
    for (const e of entries) this.#byName.set(e.name, new InheritedListener(e.name, e.fd, e.reserves, e.backlog));
  }

  /** The inherited names, in fd order. */
  get names(): string[] {
    return [...this.#byName.keys()];
  }

  /** Every listener with an fd open in this process, in fd order (see {@link InheritedListener.openFd}); empty when one has none. */
  openFds(): { readonly name: string; readonly fd: number }[] {
    const all = [...this.#byName.values()].map((l) => ({ name: l.name, fd: l.openFd }));
    return all.every((l) => l.fd !== null) ? (all as { name: string; fd: number }[]) : [];
  }

  has(name: string): boolean {
    return this.#byName.has(name);
  }

  /** The listener named `name`, or undefined. */
  get(name: string): InheritedListener | undefined {
    return this.#byName.get(name);
  }

  /**
   * The listener named `name`.
   * @throws CoreError HANDOFF_LISTENER_MISSING naming the inherited ones.
   */
  require(name: string): InheritedListener {
    const l = this.#byName.get(name);
    if (!l) {
      throw new CoreError(
        CoreErrorCode.ListenerMissing,
        `no inherited listener named "${name}" (inherited: ${this.names.join(', ') || 'none'}); the supervisor's listener names must match the daemon's`,
      );
    }
    return l;
  }
}
