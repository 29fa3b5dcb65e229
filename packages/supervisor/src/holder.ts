/**
 * Asking the serving daemon for the listeners. When a supervisor's keeper (the process that
 * held the listeners) is gone, the daemon is their last holder, and a fresh process cannot
 * receive a socket from an unrelated one. So the fresh process asks the daemon that holds the
 * data directory's lock, on its control socket, to start the given program as the daemon's
 * own child with the listeners inherited (SpawnHolder, PROTOCOL.md section 6): the new
 * keeper then runs as if systemd had passed it the sockets.
 */
import { lstatSync } from 'node:fs';
import { DataDirLock } from '@handoff/core';
import { capabilities, hasCapability } from '@handoff/protocol';
import type { Message } from '@handoff/protocol';
import { SupervisorError, SupervisorErrorCode } from './errors.js';
import { JournalFile } from './journal-file.js';
import { isAlive, processStartTime } from './processes.js';
import { SessionConnector } from './session.js';

/** What to start, and where the daemon is. */
export interface HolderRequest {
  readonly controlSocket: string;
  /** Null for a daemon without a data directory. */
  readonly dataDir: string | null;
  /** The program and its arguments; argv[0] is an absolute path. */
  readonly argv: readonly string[];
  readonly cwd: string;
  /** Exactly the holder's environment (the daemon adds LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID). */
  readonly env: Readonly<Record<string, string>>;
  /** How long to wait for a lock holder that answers and is between handoffs. */
  readonly timeoutMs: number;
}

/**
 * True when a daemon may serve and be asked: some process holds the data directory's lock, or,
 * for a daemon without a data directory, the control socket's path exists.
 */
export function daemonPresent(dataDir: string | null, controlSocket: string): boolean {
  if (dataDir !== null) return DataDirLock.probe(dataDir).held;
  try {
    return lstatSync(controlSocket).isSocket();
  } catch {
    return false;
  }
}

/**
 * The pid of the daemon that serves, as far as can be told without a session: the holder of
 * the data directory's lock, or, for a daemon without a data directory, the serving daemon
 * the journal names (if that very process still runs). Null when none is known.
 */
export function servingDaemonPid(dataDir: string | null, journalPath: string): number | null {
  if (dataDir !== null) {
    const holder = DataDirLock.probe(dataDir);
    return holder.held && holder.pid !== null && holder.pidAlive ? holder.pid : null;
  }
  try {
    const p = new JournalFile(journalPath).read().record?.incumbent;
    return p && isAlive(p.pid) && (p.startTime === null || processStartTime(p.pid) === p.startTime) ? p.pid : null;
  } catch {
    return null;
  }
}

/**
 * Asks the lock holder to start the holder; resolves with both pids.
 * @throws SupervisorError HANDOFF_LISTENER when nobody holds the lock, the holder cannot start
 * a program (no SpawnHolder capability), or it refused, each with what to do.
 */
export async function requestListenerHolder(request: HolderRequest): Promise<{ readonly daemonPid: number; readonly holderPid: number }> {
  const connector = new SessionConnector({ controlSocket: request.controlSocket, dataDir: request.dataDir, capabilities: capabilities('SpawnHolder'), startTimeoutMs: request.timeoutMs });
  const deadline = Date.now() + request.timeoutMs;
  let last = 'no daemon answered';
  while (Date.now() < deadline) {
    const session = await connector.connectToLockHolder(1_000);
    if (!session) {
      if (!daemonPresent(request.dataDir, request.controlSocket)) {
        throw new SupervisorError(SupervisorErrorCode.Listener, `no daemon serves ${request.dataDir ?? request.controlSocket}, so nobody can pass the listeners on`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
      continue;
    }
    const { hello, channel } = session;
    if (!hasCapability(hello.capabilities, 'SpawnHolder')) {
      channel.close('no SpawnHolder capability');
      throw new SupervisorError(
        SupervisorErrorCode.Listener,
        `the daemon serving ${request.dataDir ?? request.controlSocket} (pid ${hello.pid}, build ${hello.buildId || '?'}) holds the listeners but cannot pass them on (it does not announce SpawnHolder); stop it ("kill -TERM ${hello.pid}": it drains and seals) and start again — connections are refused until the new daemon listens`,
      );
    }
    const answer = await new Promise<Message | string>((resolve) => {
      const timer = setTimeout(() => {
        resolve(`pid ${hello.pid} did not answer SpawnHolder within 5 s`);
      }, 5_000);
      channel.on('message', (message) => {
        // A reload's steps are not for this session (a daemon sends them only where Reload is in force; be safe anyway).
        if (message.type === 'Heartbeat' || message.type === 'ReloadProgress' || message.type === 'ReloadDone') return;
        clearTimeout(timer);
        resolve(message);
      });
      channel.once('close', (reason) => {
        clearTimeout(timer);
        resolve(`pid ${hello.pid} closed the session: ${reason}`);
      });
      channel.send({ type: 'SpawnHolder', argv: request.argv, cwd: request.cwd, env: Object.entries(request.env).map(([k, v]) => `${k}=${v}`) });
    });
    channel.close('done');
    if (typeof answer === 'string') {
      last = answer;
    } else if (answer.type !== 'HolderSpawned') {
      last = `pid ${hello.pid} answered ${answer.type}`;
    } else if (answer.pid !== null) {
      return { daemonPid: hello.pid, holderPid: answer.pid };
    } else if (!/in progress/.test(answer.error)) {
      throw new SupervisorError(SupervisorErrorCode.Listener, `the daemon (pid ${hello.pid}) could not start a new supervisor: ${answer.error}`);
    } else {
      last = answer.error;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new SupervisorError(SupervisorErrorCode.Listener, `could not get the listeners from the daemon serving ${request.dataDir ?? request.controlSocket} within ${request.timeoutMs} ms: ${last}`);
}
