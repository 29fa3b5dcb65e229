/**
 * A framed protocol channel over a stream socket: frames out, decoded messages in.
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { FrameDecoder, encodeFrame } from '@handoff/protocol';
import type { Direction, HandoffProtocolError, Message, MessageOf } from '@handoff/protocol';

/** The direction a channel receives, given the one it sends. */
type Opposite<D extends Direction> = D extends 'toSupervisor' ? 'toDaemon' : 'toSupervisor';

/** Events of a {@link Channel}. */
export interface ChannelEvents<R extends Direction> {
  message: [message: MessageOf<R>];
  /** The peer sent something that is not protocol v1; the channel is then closed. */
  protocolError: [error: HandoffProtocolError];
  /** The connection ended (EOF, reset or local close). Emitted once. */
  close: [reason: string];
}

/**
 * One end of a protocol connection that sends messages of direction `S`.
 * A protocol error from the peer closes the channel.
 */
export class Channel<S extends Direction> extends EventEmitter<ChannelEvents<Opposite<S>>> {
  readonly sends: S;
  readonly #socket: Socket;
  readonly #decoder: FrameDecoder<Opposite<S>>;
  #closed = false;

  constructor(socket: Socket, sends: S, options: { maxFrameBytes?: number } = {}) {
    super();
    this.sends = sends;
    this.#socket = socket;
    const receives = (sends === 'toSupervisor' ? 'toDaemon' : 'toSupervisor') as Opposite<S>;
    this.#decoder = new FrameDecoder({ direction: receives, ...(options.maxFrameBytes ? { maxFrameBytes: options.maxFrameBytes } : {}) });
    this.#listeners = {
      data: (chunk: Buffer) => {
        for (const r of this.#decoder.push(chunk)) {
          if (this.#closed) return;
          if (r.ok) this.emit('message', r.message);
          else {
            this.emit('protocolError', r.error);
            this.close(`protocol error: ${r.error.message}`);
            return;
          }
        }
      },
      error: (error: Error) => {
        this.close(`socket error: ${error.message}`);
      },
      end: () => {
        this.close('EOF');
      },
      close: () => {
        this.close('closed');
      },
    };
    for (const [event, listener] of Object.entries(this.#listeners)) socket.on(event, listener);
  }

  readonly #listeners: Readonly<Record<'data' | 'error' | 'end' | 'close', (...args: any[]) => void>>; // eslint-disable-line @typescript-eslint/no-explicit-any -- Socket.on's own listener type

  /** True once the channel ended. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Sends a message; a no-op on a closed channel (the peer learns of that by its EOF). */
  send(message: Message): void {
    if (this.#closed) return;
    this.#socket.write(encodeFrame(message, this.sends));
  }

  /** Ends the connection. Idempotent. */
  close(reason = 'closed locally'): void {
    if (this.#closed) return;
    this.#closed = true;
    // Let go of the socket: something else may keep it (a dead child's `stdio` does), and
    // through our listeners it would keep this channel and everything its listeners reach.
    for (const [event, listener] of Object.entries(this.#listeners)) this.#socket.off(event, listener);
    this.#socket.on('error', () => undefined);
    this.#socket.destroy();
    this.emit('close', reason);
  }
}
