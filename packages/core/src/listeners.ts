/**
 * Listening sockets inherited by fd, by name. Each may come with reserve copies (other fds
 * of the same socket), because closing a Node server closes its fd: a drained daemon that
 * must accept again (after an abort) listens on the next copy.
 */
import { Socket } from 'node:net';
import type { Server } from 'node:net';
import { CoreError, CoreErrorCode } from './errors.js';

/** Default accept backlog; it must cover connects that arrive while nobody accepts. */
export const DEFAULT_BACKLOG = 511;

/** One inherited listening socket and its unused copies. */
export class InheritedListener {
  readonly name: string;
  /** The backlog the supervisor asked for, used when `listen` is given none. */
  readonly backlog: number;
  readonly #fds: number[];
  #inUse: number | null = null;

  constructor(name: string, fd: number, reserves: readonly number[], backlog = DEFAULT_BACKLOG) {
    this.name = name;
    this.backlog = backlog;
    this.#fds = [fd, ...reserves];
  }

  /**
   * An fd of this socket that is open in this process, to pass to a child: an unused copy
   * when one is left (never closed by this process), else the one a server listens on.
   */
  get openFd(): number | null {
    return this.#fds.at(-1) ?? this.#inUse;
  }

  /** Copies left to listen on (the first call to {@link listen} uses one). */
  get copiesLeft(): number {
    return this.#fds.length;
  }

  /**
   * Makes `server` accept on the next unused copy of this socket, with `backlog` honoured.
   * @throws CoreError HANDOFF_NO_RESERVE when every copy was used in this process.
   */
  async listen(server: Server, backlog = this.backlog): Promise<void> {
    const fd = this.#fds.shift();
    this.#inUse = fd ?? null;
    if (fd === undefined) {
      throw new CoreError(
        CoreErrorCode.NoReserve,
        `listener "${this.name}": every inherited copy has been used; this process cannot accept on it again — restart the daemon (a cold start) or give it more copies (HANDOFF_RESERVE_COPIES)`,
      );
    }
    const handle = this.#open(fd);
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
