/**
 * The descriptor channel of a daemon this supervisor spawned (PROTOCOL.md section 2,
 * "Descriptor channel", mapping `node-ipc`): a Node IPC channel over which the draining
 * incumbent passes the descriptors of the connections it offers, and over which they are
 * forwarded to the successor. Node can pass descriptors only between a parent and its
 * child, so a daemon adopted after a supervisor restart has none: its handoff drains.
 */
import type { ChildProcess } from 'node:child_process';

/** The value of `HANDOFF_FD_CHANNEL` for this mapping. */
export const FD_CHANNEL_NODE_IPC = 'node-ipc';

/** A raw libuv handle (a TCP or pipe wrap) received over IPC: never read here, only passed on or closed. */
interface RawHandle {
  close(callback?: () => void): void;
}

/** The IPC message that carries a connection's descriptor, in both directions. */
interface ConnMessage {
  readonly handoff: 'conn';
  readonly handoffId: string;
  readonly connId: number;
}

function isConnMessage(message: unknown): message is ConnMessage {
  const m = message as Partial<ConnMessage> | null;
  return typeof m === 'object' && m !== null && m.handoff === 'conn' && typeof m.handoffId === 'string' && Number.isInteger(m.connId);
}

function closeQuietly(handle: unknown): void {
  const h = handle as Partial<RawHandle & { destroy(): void }> | null | undefined;
  try {
    // A raw handle has close(); a socket (a peer that sent one) is destroyed.
    if (typeof h?.destroy === 'function') h.destroy();
    else h?.close?.();
  } catch {
    // already closed
  }
}

/** One spawned daemon's descriptor channel. */
export class DescriptorChannel {
  readonly #child: ChildProcess;
  /** The handoff whose descriptors this daemon may pass now (it drains, moving connections). */
  #expecting: string | null = null;
  readonly #held = new Map<number, RawHandle>();
  /**
   * Handles passed to the daemon and not yet written: Node sends one handle at a time and
   * drops the rest of its queue (never calling back) when the channel ends — closed here then.
   */
  readonly #passing = new Set<RawHandle>();
  /** Called once nothing is left to write (see {@link flushed}). */
  #flushWaiters: (() => void)[] = [];

  constructor(child: ChildProcess) {
    this.#child = child;
    // The channel must not keep the supervisor's event loop alive by itself.
    (child.channel as { unref?: () => void } | null | undefined)?.unref?.();
    child.on('message', (message: unknown, handle: unknown) => {
      this.#received(message, handle);
    });
    // An IPC write to a daemon that just died fails asynchronously: not news (its exit is).
    child.on('error', () => undefined);
    child.once('disconnect', () => {
      for (const handle of this.#passing) closeQuietly(handle);
      this.#passing.clear();
      this.#wakeFlushed();
      this.end();
    });
  }

  /** How many descriptors passed to the daemon are not yet written to its channel. */
  get pending(): number {
    return this.#passing.size;
  }

  /** True while the daemon is alive and its end of the channel open. */
  get open(): boolean {
    return this.#child.connected;
  }

  /** From now on take (and acknowledge) the descriptors the daemon passes for `handoffId`. */
  expect(handoffId: string): void {
    this.end();
    this.#expecting = handoffId;
  }

  /** Whether the descriptor of `connId` arrived (and was not taken yet). */
  holds(connId: number): boolean {
    return this.#held.has(connId);
  }

  /** The descriptor of `connId`, now the caller's to pass on or close. */
  take(connId: number): RawHandle | undefined {
    const handle = this.#held.get(connId);
    this.#held.delete(connId);
    return handle;
  }

  /** Stops taking descriptors; closes those held (a connection never forwarded stays with the daemon that passed it). */
  end(): void {
    this.#expecting = null;
    for (const handle of this.#held.values()) closeQuietly(handle);
    this.#held.clear();
  }

  /** Passes `handle` to the daemon as the descriptor of `connId`, then closes this process's copy. */
  pass(handoffId: string, connId: number, handle: RawHandle): void {
    if (!this.#child.connected) {
      closeQuietly(handle);
      return;
    }
    const message: ConnMessage = { handoff: 'conn', handoffId, connId };
    this.#passing.add(handle);
    const done = (): void => {
      // Sent (the kernel holds the descriptor in flight) or failed (the daemon died): this copy goes.
      this.#passing.delete(handle);
      closeQuietly(handle);
      this.#wakeFlushed();
    };
    try {
      this.#child.send(message, handle as never, done);
    } catch {
      done();
    }
  }

  /**
   * Resolves once every descriptor passed to the daemon has been written to its channel (from
   * then on the kernel holds it in flight, whatever becomes of this process), or the channel
   * ended. Node writes one descriptor at a time, each after the daemon acknowledged the last:
   * until then the rest wait in this process's memory, and would die with it.
   */
  flushed(): Promise<void> {
    if (this.#passing.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#flushWaiters.push(resolve));
  }

  #wakeFlushed(): void {
    if (this.#passing.size > 0) return;
    const waiters = this.#flushWaiters;
    this.#flushWaiters = [];
    for (const w of waiters) w();
  }

  #received(message: unknown, handle: unknown): void {
    if (!isConnMessage(message) || handle === undefined || handle === null) {
      if (handle) closeQuietly(handle);
      return;
    }
    if (message.handoffId !== this.#expecting || this.#held.has(message.connId)) {
      // Not asked for (no handoff moving connections, or one already over): closed here; the daemon that passed it still holds its own.
      closeQuietly(handle);
      return;
    }
    this.#held.set(message.connId, handle as RawHandle);
    try {
      this.#child.send({ handoff: 'connAck', handoffId: message.handoffId, connId: message.connId });
    } catch {
      // the daemon is gone
    }
  }
}
