/**
 * Moving idle client connections from the incumbent to the successor (PROTOCOL.md section 6,
 * "Moving connections"), over the descriptor channel Node offers: the IPC channel of a child
 * (section 2, "Descriptor channel", mapping `node-ipc`).
 *
 * The incumbent stops reading a connection in the event loop (`pause()` alone does not stop
 * libuv from reading), takes the bytes it read and did not consume, passes the raw handle (so
 * that it keeps its own copy) and, once the supervisor acknowledged it, sends ConnOffer. The
 * successor keeps raw handles dormant (a `net.Socket` starts reading as soon as it is made)
 * until Commit. Nothing here reads a moved connection twice: the incumbent resumes one only
 * after an abort, the successor adopts one only after Commit.
 */
import { Socket } from 'node:net';
import type { ConnOffer } from '@handoff/protocol';
import { FieldLimits } from '@handoff/protocol';
import { CoreError, CoreErrorCode } from './errors.js';
import { clipText } from './reload.js';

/** The libuv handle under a `net.Socket` (TCP or pipe wrap): read control and a write queue. */
interface StreamHandle {
  reading?: boolean;
  readStart(): number;
  readStop(): number;
  close(callback?: () => void): void;
  readonly writeQueueSize?: number;
}

function handleOf(socket: Socket): StreamHandle | null {
  return ((socket as unknown as { _handle?: StreamHandle | null })._handle) ?? null;
}

/** A connection's IPC message (both directions), and the supervisor's acknowledgement. */
interface ConnMessage {
  readonly handoff: 'conn' | 'connAck';
  readonly handoffId: string;
  readonly connId: number;
}

function asConnMessage(message: unknown): ConnMessage | null {
  const m = message as Partial<ConnMessage> | null;
  return typeof m === 'object' && m !== null && (m.handoff === 'conn' || m.handoff === 'connAck') && typeof m.handoffId === 'string' && Number.isInteger(m.connId) ? (m as ConnMessage) : null;
}

/**
 * True when this process was given a descriptor channel it can use (`fdChannel`, the
 * `HANDOFF_FD_CHANNEL` that `detectRole` read): the Node IPC channel of its supervisor.
 */
export function canMoveConnections(fdChannel: string | null): boolean {
  return fdChannel === 'node-ipc' && typeof process.send === 'function' && process.connected;
}

/** Listens on the IPC channel only while something waits on it (a listener keeps the process alive). */
function listen(onMessage: (message: unknown, handle: unknown) => void): () => void {
  process.on('message', onMessage);
  return () => {
    process.off('message', onMessage);
  };
}

/**
 * Whether `socket` is at a point where it can move: open, plaintext, nothing unsent in this
 * process. What "idle" means for its protocol (between requests, between frames) is the
 * caller's to check.
 */
export function movable(socket: Socket): boolean {
  const handle = handleOf(socket);
  if (!handle || socket.destroyed || !socket.writable || !socket.readable) return false;
  // A TLS connection's keys live in this process: it drains.
  if ((socket as { encrypted?: boolean }).encrypted === true) return false;
  return socket.writableLength === 0 && (handle.writeQueueSize ?? 0) === 0 && socket.readableLength <= FieldLimits.connBytesMax;
}

/**
 * Stops reading `socket` in the event loop and returns the bytes read and not consumed. The
 * handle's `reading` flag stays true while the connection is offered: Node (a `resume()`, a
 * `read()` below the high-water mark, http's own resume) starts reading again only where it
 * is false, and these bytes are no longer this process's to read.
 */
function stopReading(socket: Socket): Buffer {
  const handle = handleOf(socket);
  if (handle) {
    handle.readStop();
    handle.reading = true;
  }
  if (socket.readableLength === 0) return Buffer.alloc(0);
  // Readable.read() emits 'data': take the buffered bytes with the consumers out of the way.
  const consumers = socket.listeners('data') as ((chunk: Buffer) => void)[];
  socket.removeAllListeners('data');
  const parts: Buffer[] = [];
  for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) parts.push(chunk);
  for (const consumer of consumers) socket.on('data', consumer);
  return Buffer.concat(parts);
}

/** Reads `socket` again, `leftover` first (an offer abandoned by a rollback). */
function resumeReading(socket: Socket, leftover: Buffer): void {
  if (socket.destroyed) return;
  if (leftover.length > 0) socket.unshift(leftover);
  const handle = handleOf(socket);
  if (handle) {
    handle.reading = true;
    handle.readStart();
  }
}

/** What an offered connection is: its kind (`http`, `ws`, the daemon's own), listener and protocol state. */
export interface OfferDetails {
  readonly kind: string;
  readonly listener: string;
  /** The state the successor needs to serve it (at most 64 KiB); taken after reading stopped. */
  readonly state?: (() => Uint8Array | null) | undefined;
  /** The offer did not go (no acknowledgement by the deadline, the channel failed): the connection is read here again. */
  readonly onReturn?: (() => void) | undefined;
}

/**
 * The offers of one drain (incumbent side). {@link offer} is synchronous: the connection is no
 * longer this process's to read (the caller stops tracking it); {@link settle} waits until
 * every offer was acknowledged and sent.
 */
export class ConnectionOffers {
  readonly #handoffId: string;
  readonly #send: (offer: Omit<ConnOffer, 'type' | 'handoffId'>) => boolean;
  /** Offered connections, until Commit (this process exits) or a rollback (resumed). */
  readonly #offered = new Map<
    number,
    { readonly socket: Socket; readonly leftover: Buffer; readonly timeoutMs: number; readonly frame: Omit<ConnOffer, 'type' | 'handoffId'>; readonly onReturn: (() => void) | undefined; sent: boolean }
  >();
  #nextId = 1;
  /** The sockets offered (each at most once). */
  readonly #sockets = new Set<Socket>();
  #unlisten: (() => void) | null = null;
  #waiters: (() => void)[] = [];
  /** Epoch ms after which nothing more is offered (what is left drains as before). */
  readonly until: number;

  /**
   * @param send sends the ConnOffer frame once the descriptor was acknowledged; false when it
   * cannot be sent (the handoff ended): the connection then stays here.
   * @param until epoch ms after which no connection is offered any more: moving connections
   * takes time (about a millisecond each), and the drain must end well before its deadline.
   */
  constructor(handoffId: string, send: (offer: Omit<ConnOffer, 'type' | 'handoffId'>) => boolean, until = Number.POSITIVE_INFINITY) {
    this.#handoffId = handoffId;
    this.#send = send;
    this.until = until;
  }

  /** True once every offer went, or the time for offering is over. */
  get done(): boolean {
    return this.pending === 0 || Date.now() >= this.until;
  }

  /** Offers whose descriptor the supervisor has not acknowledged yet. */
  get pending(): number {
    let n = 0;
    for (const o of this.#offered.values()) if (!o.sent) n++;
    return n;
  }

  /** Connections offered and sent. */
  get sent(): number {
    let n = 0;
    for (const o of this.#offered.values()) if (o.sent) n++;
    return n;
  }

  /**
   * Offers `socket` to the successor: stops reading it, passes its descriptor, and sends
   * ConnOffer once the supervisor has it. False when it cannot move (then nothing changed).
   */
  offer(socket: Socket, details: OfferDetails): boolean {
    if (Date.now() >= this.until || this.#sockets.has(socket) || !movable(socket) || !process.connected) return false;
    const leftover = stopReading(socket);
    let state: Uint8Array | null;
    try {
      state = details.state?.() ?? null;
    } catch {
      // Its state cannot be taken: it stays, and drains as before.
      resumeReading(socket, leftover);
      return false;
    }
    if (state !== null && state.byteLength > FieldLimits.connBytesMax) {
      resumeReading(socket, leftover);
      return false;
    }
    // Its idle timer (an http.Server's keep-alive timeout) must not close this copy while it moves; restored if it stays.
    const timeoutMs = (socket as { timeout?: number }).timeout ?? 0;
    socket.setTimeout(0);
    const connId = this.#nextId++;
    const frame = { connId, listener: clipText(details.listener, FieldLimits.connKindMax), kind: clipText(details.kind, FieldLimits.connKindMax) || 'conn', leftover: new Uint8Array(leftover), state };
    const entry = { socket, leftover, timeoutMs, frame, onReturn: details.onReturn, sent: false };
    this.#sockets.add(socket);
    this.#offered.set(connId, entry);
    this.#unlisten ??= listen((message) => {
      const m = asConnMessage(message);
      if (m?.handoff !== 'connAck' || m.handoffId !== this.#handoffId) return;
      const acked = this.#offered.get(m.connId);
      if (!acked || acked.sent) return;
      acked.sent = this.#send(acked.frame);
      if (!acked.sent) this.#giveBack(m.connId);
      this.#wake();
    });
    const handle = handleOf(socket);
    try {
      // A raw handle (not the socket): Node sends it as is and this process keeps its own copy.
      process.send?.({ handoff: 'conn', handoffId: this.#handoffId, connId } satisfies ConnMessage, handle as never, (error: Error | null) => {
        if (error) {
          this.#giveBack(connId);
          this.#wake();
        }
      });
    } catch {
      this.#giveBack(connId);
      return false;
    }
    return true;
  }

  /** An offer that did not go, or a rollback: the connection is read here again (`returned`: its drain counts it again). */
  #giveBack(connId: number, returned = true): void {
    const entry = this.#offered.get(connId);
    if (!entry) return;
    this.#offered.delete(connId);
    this.#sockets.delete(entry.socket);
    if (entry.timeoutMs > 0 && !entry.socket.destroyed) entry.socket.setTimeout(entry.timeoutMs);
    resumeReading(entry.socket, entry.leftover);
    if (returned) entry.onReturn?.();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /**
   * Waits until every offer was sent (before Drained), at most until `deadline`. An offer still
   * unacknowledged then is cut, as the drain cuts what remains at its deadline (`cut`); on an
   * abort it stays here (the rollback resumes it).
   */
  async settle(deadline: number, signal: AbortSignal): Promise<{ readonly sent: number; readonly cut: number }> {
    const wake = (): void => {
      this.#wake();
    };
    signal.addEventListener('abort', wake, { once: true });
    while ([...this.#offered.values()].some((o) => !o.sent) && Date.now() < deadline && process.connected && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, Math.min(50, deadline - Date.now())));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    signal.removeEventListener('abort', wake);
    let cut = 0;
    for (const [connId, o] of [...this.#offered]) {
      if (o.sent || signal.aborted) continue;
      this.#offered.delete(connId);
      o.socket.destroy();
      cut++;
    }
    this.#unlisten?.();
    this.#unlisten = null;
    return { sent: this.sent, cut };
  }

  /** The handoff was abandoned: every offered connection is read here again, its unread bytes first. */
  resume(): number {
    this.#unlisten?.();
    this.#unlisten = null;
    const n = this.#offered.size;
    // The drainers and declared connections take them back themselves on a rollback.
    for (const connId of [...this.#offered.keys()]) this.#giveBack(connId, false);
    return n;
  }
}

/** A connection handed to the successor, once it is the incumbent (after Commit). */
export interface AdoptedConnection {
  /** The connection, paused and not read yet: attach a consumer, then `resume()` it (`leftover` is not in it). */
  readonly socket: Socket;
  readonly kind: string;
  /** The listener it was accepted on (a name of `LISTEN_FDNAMES`). */
  readonly listener: string;
  /** Bytes the incumbent read and did not consume: they come before anything on `socket`. */
  readonly leftover: Buffer;
  /** The state the incumbent handed with it (its own encoding), or null. */
  readonly state: Uint8Array | null;
}

/**
 * The connections offered to this successor: ConnOffer frames and descriptors (which travel on
 * different channels, matched by connId), kept dormant until Commit.
 */
export class HeldConnections {
  readonly #frames = new Map<number, ConnOffer>();
  readonly #handles = new Map<number, StreamHandle>();
  #handoffId: string | null = null;
  #unlisten: (() => void) | null;
  #waiters: (() => void)[] = [];
  #closed = false;

  /** @param receive listen for descriptors (this successor announced `MoveConnections`). */
  constructor(receive: boolean) {
    if (!receive) {
      this.#unlisten = null;
      return;
    }
    const unlisten = listen((message, handle) => {
      const m = asConnMessage(message);
      if (m?.handoff !== 'conn' || !handle || (this.#handoffId !== null && m.handoffId !== this.#handoffId) || this.#handles.has(m.connId)) {
        (handle as StreamHandle | undefined)?.close();
        return;
      }
      this.#handles.set(m.connId, handle as StreamHandle);
      this.#wake();
    });
    // The descriptor channel's end: every descriptor written to it has been read.
    const ended = (): void => {
      this.#wake();
    };
    process.on('disconnect', ended);
    this.#unlisten = () => {
      unlisten();
      process.off('disconnect', ended);
    };
  }

  /** A ConnOffer from the supervisor. */
  offered(offer: ConnOffer): void {
    this.#handoffId = offer.handoffId;
    this.#frames.set(offer.connId, offer);
    this.#wake();
  }

  #complete(): number {
    let n = 0;
    for (const id of this.#frames.keys()) if (this.#handles.has(id)) n++;
    return n;
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /**
   * Resolves once `count` connections (frame and descriptor) are here; the supervisor's phase
   * deadline bounds the wait. Once the supervisor's channel ended (no more frames), the
   * descriptors it wrote before it went may still be on their way on the descriptor channel:
   * they are waited for until that channel ends too, at most `afterCloseMs`.
   */
  async await(count: number, afterCloseMs = 2_000): Promise<void> {
    let giveUpAt = Number.POSITIVE_INFINITY;
    while (this.#complete() < count) {
      if (this.#closed) {
        giveUpAt = Math.min(giveUpAt, Date.now() + afterCloseMs);
        if (this.#unlisten === null || !process.connected || Date.now() >= giveUpAt) throw new CoreError(CoreErrorCode.Aborted, 'the successor stopped waiting for the connections offered to it');
      }
      await new Promise<void>((resolve) => {
        const timer = this.#closed ? setTimeout(resolve, Math.max(1, giveUpAt - Date.now())) : undefined;
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** After Commit: each connection, as a socket not read yet. Stops listening. */
  adopt(): AdoptedConnection[] {
    const adopted: AdoptedConnection[] = [];
    for (const [id, frame] of this.#frames) {
      const handle = this.#handles.get(id);
      if (!handle) continue;
      this.#handles.delete(id);
      const socket = new Socket({ handle: handle as never, readable: true, writable: true, pauseOnCreate: true } as never);
      adopted.push({ socket, kind: frame.kind, listener: frame.listener, leftover: Buffer.from(frame.leftover), state: frame.state });
    }
    this.#frames.clear();
    this.#end();
    return adopted;
  }

  /**
   * No more frames will come (the supervisor's channel ended): a takeover waiting for them
   * goes on once the descriptors already on their way arrived (see {@link await}); what is held stays.
   */
  stop(): void {
    this.#closed = true;
    this.#wake();
  }

  /** Stops listening for descriptors. */
  #end(): void {
    this.stop();
    this.#unlisten?.();
    this.#unlisten = null;
  }

  /** Closes what is held (this process exits, or serves alone and may not keep them) and stops listening. */
  close(): void {
    this.#end();
    for (const handle of this.#handles.values()) handle.close();
    this.#handles.clear();
    this.#frames.clear();
  }
}

/** How a daemon describes a connection that may move (see {@link MovableConnections.add}). */
export interface MovableSpec {
  /** What speaks on it (`ws`, or the daemon's own name); the successor's `adopt` gets it back. At most 64 bytes. */
  readonly kind: string;
  /** True at a boundary where it can move: no message half read, nothing of its own queued to send. */
  idle(): boolean;
  /** The protocol state the successor needs to serve it (at most 64 KiB, the daemon's own encoding), taken once reading stopped. */
  state?(): Uint8Array | null;
}

/**
 * The long-lived connections a daemon declares movable — WebSocket sessions, raw protocols:
 * at a handoff each moves to the successor when idle instead of being cut at the drain's
 * end, and the successor's `adopt` serves it with its state (PROTOCOL.md section 6, "Moving
 * connections"). Keep-alive HTTP connections move without it. Give it to `runDaemon` as
 * `connections`; connections that cannot move (TLS, never idle before the deadline) drain as before.
 */
export class MovableConnections {
  readonly #entries = new Map<Socket, { readonly spec: MovableSpec; moved: boolean }>();
  readonly #adopt: ((connection: AdoptedConnection) => void) | undefined;

  /** @param options.adopt serves a connection handed over by the predecessor (after Commit): attach to `socket`, then `resume()` it. */
  constructor(options: { readonly adopt?: (connection: AdoptedConnection) => void } = {}) {
    this.#adopt = options.adopt;
  }

  /**
   * Declares `socket` movable until it closes; returns a function that withdraws it.
   * @throws CoreError HANDOFF_INVALID_ARGUMENT when `kind` is empty or longer than 64 bytes.
   */
  add(socket: Socket, spec: MovableSpec): () => void {
    if (spec.kind === '' || Buffer.byteLength(spec.kind) > FieldLimits.connKindMax) {
      throw new CoreError(CoreErrorCode.InvalidArgument, `a movable connection's kind must be 1 to ${FieldLimits.connKindMax} bytes, got ${JSON.stringify(spec.kind.slice(0, 80))}`);
    }
    const remove = (): void => {
      this.#entries.delete(socket);
    };
    this.#entries.set(socket, { spec, moved: false });
    socket.once('close', remove);
    return remove;
  }

  /** Movable connections open now. */
  get size(): number {
    return this.#entries.size;
  }

  /** @internal Those not moved yet, open. */
  pending(): [Socket, MovableSpec][] {
    return [...this.#entries].filter(([socket, e]) => !e.moved && !socket.destroyed).map(([socket, e]) => [socket, e.spec]);
  }

  /** @internal */
  markMoved(socket: Socket): void {
    const entry = this.#entries.get(socket);
    if (entry) entry.moved = true;
  }

  /** @internal An offer that did not go: it is this process's again. */
  unmark(socket: Socket): void {
    const entry = this.#entries.get(socket);
    if (entry) entry.moved = false;
  }

  /** @internal A rollback: every connection is this process's again. */
  resume(): void {
    for (const entry of this.#entries.values()) entry.moved = false;
  }

  /** @internal Hands an adopted connection to the daemon; false when it has no `adopt`. */
  adopt(connection: AdoptedConnection): boolean {
    if (!this.#adopt) return false;
    this.#adopt(connection);
    return true;
  }
}
