/**
 * Control sessions: the supervisor's connection to the serving daemon's control socket.
 * Connect, read its Hello, negotiate, answer HelloAck — and keep the session only with the
 * process that holds the data directory's lock (recovery never trusts a socket alone).
 */
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { DataDirLock, LOCK_FILE, lockKindsHeldBy } from '@handoff/core';
import { Channel, crashPoint } from '@handoff/core/internal';
import { PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, capabilities as capabilityBits, commonCapabilities, negotiateVersion } from '@handoff/protocol';
import type { Hello } from '@handoff/protocol';
import { publish } from './channels.js';

/** An established control session. */
export interface IncumbentSession {
  readonly hello: Hello;
  readonly channel: Channel<'toDaemon'>;
  /** The capabilities in force on this session (its HelloAck's). */
  readonly agreed: number;
}

/**
 * Opens a session; resolves null when nothing answers, the peer is not an incumbent, or the
 * versions do not overlap (the reason is passed to `onRefused`).
 */
export function openIncumbentSession(
  path: string,
  options: {
    readonly timeoutMs: number;
    readonly capabilities: number;
    readonly onRefused?: (reason: string) => void;
    /** Whether descriptors can be passed with the daemon `pid`; without, `MoveConnections` is not offered to it. */
    readonly canPassDescriptors?: (pid: number) => boolean;
  },
): Promise<IncumbentSession | null> {
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
      const offered = options.canPassDescriptors?.(message.pid) === true ? options.capabilities : (options.capabilities & ~capabilityBits('MoveConnections')) >>> 0;
      const agreed = commonCapabilities(offered, message.capabilities);
      channel.send({ type: 'HelloAck', version, handoffId: null, capabilities: agreed });
      channel.removeAllListeners('close');
      finish({ hello: message, channel, agreed });
    });
  });
}

/**
 * How long a daemon may answer on the control socket while the data directory's lock is free
 * before it is taken to lock another directory. A daemon binds its control socket only once
 * it holds the lock; the lock is briefly free during a handoff (between the incumbent's
 * release and the successor's take), never this long.
 */
export const LOCK_MISMATCH_MS = 2_000;

/** What a {@link SessionConnector} connects to. */
export interface ConnectorOptions {
  readonly controlSocket: string;
  /** The data directory whose lock holder is the daemon; null for a daemon without one (whoever answers is the daemon). */
  readonly dataDir: string | null;
  readonly capabilities: number;
  readonly startTimeoutMs: number;
  /** See {@link openIncumbentSession}. */
  readonly canPassDescriptors?: (pid: number) => boolean;
}

/** Opens sessions with the daemon that holds the lock of a data directory (or, without one, that answers on the control socket). */
export class SessionConnector {
  readonly #options: ConnectorOptions;
  readonly #refusals = new Map<number, string>();

  constructor(options: ConnectorOptions) {
    this.#options = options;
  }

  /**
   * Why {@link awaitSession} last gave up on `pid` before the start timeout: it answered on
   * the control socket but does not hold the lock of the data directory. Null otherwise.
   */
  refusal(pid: number): string | null {
    return this.#refusals.get(pid) ?? null;
  }

  /** Connects to whoever answers on the control socket, keeping the session only if it holds the lock (and is `expectPid`, when given). */
  async connectToLockHolder(timeoutMs: number, expectPid?: number): Promise<IncumbentSession | null> {
    return (await this.#connect(timeoutMs, expectPid)).session;
  }

  /** {@link connectToLockHolder}, also saying whether the daemon that answered found the lock free. */
  async #connect(timeoutMs: number, expectPid?: number): Promise<{ readonly session: IncumbentSession | null; readonly lockFreeFor?: number; readonly flock?: boolean }> {
    const session = await openIncumbentSession(this.#options.controlSocket, {
      timeoutMs,
      capabilities: this.#options.capabilities,
      ...(this.#options.canPassDescriptors ? { canPassDescriptors: this.#options.canPassDescriptors } : {}),
      onRefused: (reason) => {
        publish('sessionRefused', { reason });
      },
    });
    if (!session) return { session: null };
    const pid = session.hello.pid;
    const { dataDir } = this.#options;
    if (dataDir === null) {
      // No data directory: the daemon that answers is the daemon (a stateless one has no lock).
      if (expectPid === undefined || pid === expectPid) return { session };
      publish('sessionRefused', { reason: `pid ${pid} answered; expected ${expectPid}` });
      session.channel.close('not the expected daemon');
      return { session: null };
    }
    const lock = DataDirLock.probe(dataDir);
    // The kernel says who holds the lock (Linux); the pid file only where it cannot be asked.
    const kinds = lockKindsHeldBy(pid, dataDir);
    const holds = lock.held && (kinds === null ? lock.pid === pid : kinds.includes('ofd') || kinds.includes('posix'));
    if (!lock.held && kinds?.includes('flock') && (expectPid === undefined || pid === expectPid)) {
      // flock(2) does not exclude the record locks every other daemon takes: two writers possible.
      const reason = `the daemon (pid ${pid}) locks ${join(dataDir, LOCK_FILE)} with flock(2), which does not exclude the POSIX record lock other daemons take (two writers would be possible); take an fcntl record lock instead (F_OFD_SETLK or F_SETLK: Python fcntl.lockf, Go unix.FcntlFlock, Rust nix fcntl F_SETLK) — PROTOCOL.md section 14`;
      this.#refusals.set(pid, reason);
      publish('sessionRefused', { reason });
      session.channel.close('flock instead of a record lock');
      return { session: null, flock: true };
    }
    if (!holds || (expectPid !== undefined && pid !== expectPid)) {
      publish('sessionRefused', { reason: `pid ${pid} answered; the lock is ${lock.held ? `held by ${String(lock.pid)}` : 'free'}; expected ${String(expectPid ?? 'the lock holder')}` });
      session.channel.close('not the lock holder');
      return lock.held ? { session: null } : { session: null, lockFreeFor: pid };
    }
    return { session };
  }

  /**
   * Waits (up to the start timeout) until `pid` answers on the control socket as the lock
   * holder; null if it does not, or `isGone()`. Gives up early, with a {@link refusal}, when
   * `pid` keeps answering for {@link LOCK_MISMATCH_MS} while nobody holds the lock: it locks
   * another data directory than the one configured.
   */
  async awaitSession(pid: number, isGone: () => boolean): Promise<IncumbentSession | null> {
    const deadline = Date.now() + this.#options.startTimeoutMs;
    this.#refusals.delete(pid);
    let locklessSince: number | null = null;
    while (Date.now() < deadline && !isGone()) {
      const { session, lockFreeFor, flock } = await this.#connect(1_000, pid);
      if (session) return session;
      if (flock) return null;
      locklessSince = lockFreeFor === pid ? (locklessSince ?? Date.now()) : null;
      if (locklessSince !== null && Date.now() - locklessSince >= LOCK_MISMATCH_MS) {
        const reason = `the daemon (pid ${pid}) answered on ${this.#options.controlSocket} but does not hold the lock on ${String(this.#options.dataDir)}: its data directory probably differs from the configured one ([daemon] data_dir); make them the same (a daemon without a data directory: remove data_dir)`;
        this.#refusals.set(pid, reason);
        publish('sessionRefused', { reason });
        return null;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return null;
  }
}
