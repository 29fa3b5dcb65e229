/**
 * The supervisor's control session with an incumbent: connect to its control socket, read
 * its Hello, negotiate, answer HelloAck.
 */
import { createConnection } from 'node:net';
import { Channel, crashPoint } from '@handoff/core';
import { PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, commonCapabilities, negotiateVersion } from '@handoff/protocol';
import type { Hello } from '@handoff/protocol';

/** An established control session. */
export interface IncumbentSession {
  readonly hello: Hello;
  readonly channel: Channel<'toDaemon'>;
}

/**
 * Opens a session; resolves null when nothing answers, the peer is not an incumbent, or the
 * versions do not overlap (the reason is passed to `onRefused`).
 */
export function openIncumbentSession(path: string, options: { readonly timeoutMs: number; readonly capabilities: number; readonly onRefused?: (reason: string) => void }): Promise<IncumbentSession | null> {
  return new Promise((resolve) => {
    const socket = createConnection(path);
    const channel = new Channel(socket, 'toDaemon');
    let settled = false;
    const finish = (session: IncumbentSession | null, refused?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!session) {
        channel.close('session refused');
        if (refused) options.onRefused?.(refused);
      }
      resolve(session);
    };
    const timer = setTimeout(() => {
      finish(null, `no Hello on ${path} within ${options.timeoutMs} ms`);
    }, options.timeoutMs);
    channel.once('close', (reason) => {
      finish(null, reason);
    });
    channel.once('message', (message) => {
      if (message.type !== 'Hello' || message.role !== 'incumbent') {
        finish(null, `expected an incumbent's Hello on ${path}, got ${message.type}`);
        return;
      }
      crashPoint('supervisor:received-Hello-from-incumbent');
      let version: number;
      try {
        version = negotiateVersion({ min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX }, { min: message.protoMin, max: message.protoMax });
      } catch (error) {
        finish(null, (error as Error).message);
        return;
      }
      channel.send({ type: 'HelloAck', version, handoffId: null, capabilities: commonCapabilities(options.capabilities, message.capabilities) });
      channel.removeAllListeners('close');
      finish({ hello: message, channel });
    });
  });
}
