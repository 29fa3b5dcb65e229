/**
 * Draining an `http.Server` with zero client errors under keep-alive load (docs/design.md, "Draining HTTP"):
 * with moving (a handoff with `MoveConnections`), hand each keep-alive connection to the
 * successor as soon as it is between requests; otherwise (and, with moving, for a TLS
 * connection or once the grace is over) answer requests with `Connection: close`; stop accepting without touching open
 * connections (`net.Server.prototype.close`, not `http.Server.close`, which closes idle
 * keep-alive sockets at once and races with requests already on the wire) once the
 * connections open at the start are gone, close the connections still idle after a grace
 * (accepting until then), and destroy what remains at the hard deadline.
 */
import type { Server as HttpServer } from 'node:http';
import { Server as NetServer } from 'node:net';
import type { Socket } from 'node:net';

/** Options of {@link HttpDrainer.drain}. */
export interface HttpDrainOptions {
  /** Hard deadline, epoch ms: connections still open then are destroyed (and counted). */
  readonly deadline: number;
  /** Idle keep-alive connections are closed after this. Default 1000 ms. */
  readonly graceMs?: number;
  /** Stops waiting (the handoff was abandoned); connections are left as they are. */
  readonly signal?: AbortSignal;
  /**
   * Moves idle keep-alive connections instead of closing them (PROTOCOL.md section 6, "Moving
   * connections"): called for each connection between requests; true when it moved (it is then
   * no longer this drainer's). Responses are then not marked `Connection: close`, except on
   * connections that cannot move (TLS).
   */
  readonly move?: (socket: Socket) => boolean;
  /**
   * With `move`: true once every offer went (the successor holds them all). Until then the
   * server keeps accepting — past the grace, up to the deadline — so that moving many
   * connections does not leave fresh ones waiting; what it accepts meanwhile moves too.
   */
  readonly moved?: () => boolean;
}

/** What a drain achieved. */
export interface HttpDrainReport {
  /** Connections still open at the deadline (destroyed before `drain` returned), or when aborted. */
  readonly openConnsRemaining: number;
  readonly acceptClosed: boolean;
}

/**
 * Tracks an http.Server's connections from its creation so it can be drained. Create it
 * right after the server, before it accepts.
 */
export class HttpDrainer {
  readonly server: HttpServer;
  readonly #sockets = new Set<Socket>();
  /** Connections the last drain moved away, until a rollback gives them back. */
  readonly #moved = new Set<Socket>();
  /**
   * Bytes each connection had read when this drainer got it: one that read none since, and
   * owes no response, has no request in progress — the connections list counts a connection
   * as busy from its start until its first request completes (so that a silent client is
   * timed out), which a connection just accepted, or moved here, is not.
   */
  readonly #bytesAtStart = new WeakMap<Socket, number>();
  #draining = false;
  #moving = false;
  /** The running drain's `move`, while it runs. */
  #move: ((socket: Socket) => boolean) | undefined;
  #graceEnds = 0;

  constructor(server: HttpServer) {
    this.server = server;
    server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      this.#bytesAtStart.set(socket, socket.bytesRead);
      // Queued connections whose client gave up raise EPIPE/ECONNRESET: never crash on them.
      socket.on('error', () => undefined);
      socket.once('close', () => this.#sockets.delete(socket));
    });
    server.prependListener('request', (req, res) => {
      // While connections move, an idle one leaves with its client none the wiser: no close asked, except where it cannot move.
      const moves = this.#moving && Date.now() < this.#graceEnds && (req.socket as { encrypted?: boolean }).encrypted !== true;
      if (this.#draining && !moves) res.setHeader('Connection', 'close');
      // A busy keep-alive connection is idle for a moment after each response: offer it then.
      if (this.#draining && moves) {
        res.once('finish', () => {
          setImmediate(() => {
            this.#moveIfIdle(req.socket);
          });
        });
      }
    });
  }

  #moveIfIdle(socket: Socket): void {
    const move = this.#move;
    if (!move || !this.#sockets.has(socket)) return;
    if (this.#idleConnections()?.has(socket) === true && move(socket)) this.release(socket);
  }

  /**
   * The connections with no request in progress: the response to the last one written, and no
   * byte of a next one read (the parser's own view, which Node's `closeIdleConnections` uses);
   * null when this Node does not expose it (then nothing moves). A connection that has read
   * nothing yet counts as idle if it was open before the drain (`before`).
   */
  #idleConnections(before: ReadonlySet<Socket> = new Set()): Set<Socket> | null {
    const key = Object.getOwnPropertySymbols(this.server).find((s) => s.description === 'http.server.connections');
    const list = key === undefined ? undefined : (this.server as unknown as Record<symbol, { idle?: () => { socket?: Socket }[] } | undefined>)[key];
    if (typeof list?.idle !== 'function') return null;
    const idle = new Set<Socket>();
    const responded = (socket: Socket): boolean => {
      const message = (socket as { _httpMessage?: { finished?: boolean } | null })._httpMessage;
      return !message || message.finished === true;
    };
    for (const parser of list.idle()) if (parser.socket && responded(parser.socket)) idle.add(parser.socket);
    // Only those open before the drain: one accepted during it comes with a request to serve.
    for (const socket of before) {
      if (!idle.has(socket) && this.#sockets.has(socket) && socket.bytesRead === this.#bytesAtStart.get(socket) && socket.readableLength === 0 && responded(socket)) idle.add(socket);
    }
    return idle;
  }

  /** A connection offered to the successor (this drainer's keep-alive one, or a declared one it tracked): no longer waited for. */
  release(socket: Socket): void {
    if (this.#sockets.delete(socket)) this.#moved.add(socket);
  }

  /** A connection handed bytes that its parser may hold part of (an adopted one's unread bytes): idle only once it answered a request. */
  notFresh(socket: Socket): void {
    this.#bytesAtStart.set(socket, -1);
  }

  /** An offer that did not go: the connection is this drainer's again. */
  restore(socket: Socket): void {
    if (this.#moved.delete(socket) && !socket.destroyed) this.#sockets.add(socket);
  }

  /**
   * Counts a connection that did not come through this server's 'connection' event (a declared
   * one adopted from the predecessor: never an HTTP connection, so never moved as one).
   */
  track(socket: Socket): void {
    if (this.#sockets.has(socket)) return;
    this.#sockets.add(socket);
    this.#bytesAtStart.set(socket, -1);
    socket.on('error', () => undefined);
    socket.once('close', () => this.#sockets.delete(socket));
  }

  /** Closes this drainer's idle keep-alive connections (never one it offered: that copy is the successor's until Commit). */
  #closeIdle(): void {
    const idle = this.#idleConnections();
    if (idle === null) {
      if (this.#moved.size === 0) this.server.closeIdleConnections();
      return;
    }
    for (const socket of idle) if (this.#sockets.has(socket)) socket.destroy();
  }

  /** A rollback: the drain is over, and the connections it moved away are this drainer's again. */
  resume(): void {
    this.#draining = false;
    this.#moving = false;
    for (const socket of this.#moved) if (!socket.destroyed) this.#sockets.add(socket);
    this.#moved.clear();
  }

  /** Open connections now. */
  get openConnections(): number {
    return this.#sockets.size;
  }

  /** True once a drain started. */
  get draining(): boolean {
    return this.#draining;
  }

  /**
   * Answers every request from now on with `Connection: close` (with `move`: offers each
   * connection as soon as it is idle instead, and asks for the close only on one that cannot
   * move, or once the grace is over), lets in-flight requests finish, and stops accepting once
   * every connection that was open when the drain began has closed or moved — or at the
   * grace's end, when the connections still idle are closed. Until then
   * new connections are still accepted (and each served once): a client that keeps an idle
   * keep-alive connection open must not leave everyone else with nobody accepting for the
   * whole grace (measured: a 1 s stall for fresh connections with one idle connection open).
   */
  async drain(options: HttpDrainOptions): Promise<HttpDrainReport> {
    this.#draining = true;
    this.#moving = options.move !== undefined;
    this.#move = options.move;
    try {
      return await this.#drain(options);
    } finally {
      this.#move = undefined;
    }
  }

  async #drain(options: HttpDrainOptions): Promise<HttpDrainReport> {
    let idleKnown = true;
    const graceEnds = Date.now() + (options.graceMs ?? 1_000);
    this.#graceEnds = graceEnds;
    const preexisting = new Set(this.#sockets);
    let accepting = this.server.listening;
    const stopAccepting = (): void => {
      if (!accepting) return;
      accepting = false;
      NetServer.prototype.close.call(this.server);
    };
    for (;;) {
      if (options.signal?.aborted) {
        stopAccepting();
        return { openConnsRemaining: this.#sockets.size, acceptClosed: true };
      }
      if (options.move && idleKnown) {
        const idle = this.#idleConnections(preexisting);
        idleKnown = idle !== null;
        // This Node does not say which connections are idle: nothing moves, they drain as before.
        if (!idleKnown) this.#moving = false;
        for (const socket of idle ?? []) if (this.#sockets.has(socket) && options.move(socket)) this.release(socket);
      }
      const now = Date.now();
      for (const socket of preexisting) if (!this.#sockets.has(socket)) preexisting.delete(socket);
      // Moving: accept until every offer went, so fresh connections never wait for the transfer.
      const offersOut = this.#moving && options.moved?.() === false;
      if (offersOut ? now >= options.deadline : preexisting.size === 0 || now >= graceEnds) stopAccepting();
      if (!accepting && this.#sockets.size === 0) return { openConnsRemaining: 0, acceptClosed: true };
      if (now >= options.deadline) {
        // Past the deadline nothing may be served: destroy what remains, and return once it is gone.
        stopAccepting();
        const remaining = [...this.#sockets];
        const closed = remaining.map((socket) => new Promise((resolve) => socket.once('close', resolve)));
        for (const socket of remaining) socket.destroy();
        await Promise.race([Promise.all(closed), new Promise((resolve) => setTimeout(resolve, 1_000))]);
        return { openConnsRemaining: remaining.length, acceptClosed: true };
      }
      if (now >= graceEnds) this.#closeIdle();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}
