/**
 * Binding the control socket: a filesystem Unix socket that only this user can reach. A
 * path left by a dead process is replaced; a path a live process answers on is not, unless
 * asked (a committed successor takes the path over from its predecessor).
 */
import { chmodSync, lstatSync, statSync, unlinkSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { CoreError, CoreErrorCode } from './errors.js';
import { messageOf } from '@handoff/protocol/internal';

/** True when something accepts connections on the Unix socket `path`. */
export function answers(path: string, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(path);
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => {
      done(true); // connected-but-silent or slow: treat as alive, never steal a live path
    }, timeoutMs);
    socket.once('connect', () => {
      done(true);
    });
    socket.once('error', () => {
      done(false);
    });
  });
}

/** A bound control socket server. */
export interface BoundControlSocket {
  readonly server: Server;
  /**
   * Stops serving sessions. The path is unlinked only if it is still this server's socket
   * (same inode and birth time: a freed inode number is soon reused, e.g. by a successor's
   * socket at the same path) and `unlink` is not false; otherwise the path is left alone.
   */
  close(options?: { readonly unlink?: boolean }): Promise<void>;
}

function identity(path: string): string | null {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}:${st.birthtimeNs}:${st.ctimeNs}`;
  } catch {
    return null;
  }
}

/**
 * Binds `path` and hands each connection to `onConnection`.
 * @throws CoreError HANDOFF_INVALID_ARGUMENT when a live process serves the path and `replace` is false.
 */
export async function bindControlSocket(path: string, onConnection: (socket: Socket) => void, options: { replace?: boolean } = {}): Promise<BoundControlSocket> {
  let exists: boolean;
  try {
    exists = lstatSync(path).isSocket();
  } catch {
    exists = false;
  }
  if (exists) {
    if (!options.replace && (await answers(path))) {
      throw new CoreError(CoreErrorCode.ControlSocketInUse, `control socket ${path} is served by a live process; is another daemon running on this data? stop it first`);
    }
    try {
      unlinkSync(path);
    } catch {
      // raced with its owner's cleanup: fine
    }
  }
  const server = createServer({ allowHalfOpen: false, pauseOnConnect: false }, onConnection);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) => {
      reject(new CoreError(CoreErrorCode.InvalidArgument, `cannot bind control socket ${path}: ${messageOf(error)}`, { cause: error }));
    });
    server.listen(path, () => {
      resolve();
    });
  });
  chmodSync(path, 0o600);
  const mine = identity(path);
  return {
    server,
    close: async (closeOptions = {}) => {
      // libuv unlinks a Unix socket's path (by name) when its listening server closes. So a
      // server whose path now belongs to a successor, or that must leave its path in place,
      // is never closed: it stops taking sessions and no longer keeps the process alive.
      if (closeOptions.unlink === false || mine === null || identity(path) !== mine) {
        server.removeAllListeners('connection');
        server.on('connection', (socket: Socket) => socket.destroy());
        server.unref();
        return;
      }
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
      try {
        unlinkSync(path);
      } catch {
        // libuv already unlinked it
      }
    },
  };
}
