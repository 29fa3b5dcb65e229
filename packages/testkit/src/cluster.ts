/**
 * A fixture: a supervisor process with a daemon, in a temp directory, with this process
 * playing the listener holder (it binds the listeners and passes them to each supervisor it
 * starts, so they outlive a killed supervisor, as systemd would). Everything it starts is
 * killed and the directory removed on dispose, also when a test fails:
 *
 *     await using cluster = await startCluster();
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { request } from 'node:http';
import { DataDirLock } from '@handoff/core';
import type { LockProbe } from '@handoff/core';
import type { Timeouts } from '@handoff/protocol';
import { bindListeners } from '@handoff/supervisor';
import type { DaemonCommand, HandoffRequest, HandoffResult, HeldListener, SupervisorStatus } from '@handoff/supervisor';
import { waitUntil } from './wait.js';

/** Timeouts for tests: short, so that liveness and recovery cases finish quickly. */
export const TEST_TIMEOUTS: Partial<Timeouts> = {
  heartbeatMs: 100,
  livenessMs: 1_000,
  helloMs: 10_000,
  drainMs: 5_000,
  drainGraceMs: 200,
  sealMs: 10_000,
  readyMs: 10_000,
  totalMs: 30_000,
  stopGraceMs: 500,
};

/** Options of {@link startCluster}. */
export interface ClusterOptions {
  /** The daemon; default the example kv daemon (in this workspace). */
  readonly daemon?: DaemonCommand;
  /** Extra environment of the default kv daemon. */
  readonly daemonEnv?: Readonly<Record<string, string>>;
  readonly timeouts?: Partial<Timeouts>;
  /** Extra environment of the supervisor process (and so of the daemons it starts). */
  readonly env?: Readonly<Record<string, string>>;
  /** How long to wait for the supervisor to be ready. Default 20 s. */
  readonly startTimeoutMs?: number;
}

/** A reply from the supervisor process. */
type Reply = { ok: true; value: unknown } | { ok: false; error: { code: string; message: string } };

/** The example kv daemon's command, for a data directory. */
export function kvDaemon(dataDir: string, env: Readonly<Record<string, string>> = {}): DaemonCommand {
  let main: string;
  try {
    main = join(dirname(createRequire(import.meta.url).resolve('@handoff/example-kv/package.json')), 'dist', 'main.js');
  } catch {
    throw new Error('the example kv daemon is not installed here; pass ClusterOptions.daemon');
  }
  return { command: process.execPath, args: [main], env: { KV_DATA_DIR: dataDir, KV_BUILD_ID: 'v1', ...env } };
}

/** pids whose environment holds `needle` (our own processes only; others are unreadable). */
export function processesWithEnv(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, 'utf8');
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue; // zombies are gone
      if (environ.split('\0').includes(needle)) pids.push(Number(entry));
    } catch {
      // gone, or not ours
    }
  }
  return pids;
}

/** The built supervisor entry (also when this module runs from source, as in this package's tests). */
const SUPERVISOR_ENTRY = join(dirname(createRequire(import.meta.url).resolve('@handoff/testkit/package.json')), 'dist', 'supervisor-process.js');

/** A running supervisor with its daemon. */
export class Cluster implements AsyncDisposable {
  readonly dir: string;
  readonly dataDir: string;
  readonly controlSocket: string;
  readonly journal: string;
  readonly crashFile: string;
  readonly listeners: readonly HeldListener[];
  readonly port: number;
  readonly daemon: DaemonCommand;
  readonly #closeListeners: () => void;
  readonly #options: ClusterOptions;
  #supervisor: ChildProcess | null = null;
  readonly #groups = new Set<number>();
  #output = '';
  #nextId = 1;
  readonly #pending = new Map<number, (reply: Reply) => void>();
  /** Events the supervisor published (phases, restarts, recovery). */
  readonly events: Record<string, unknown>[] = [];

  /** @internal use {@link startCluster} */
  constructor(options: ClusterOptions) {
    this.#options = options;
    this.dir = mkdtempSync(join(tmpdir(), 'handoff-test-'));
    this.dataDir = join(this.dir, 'data');
    this.controlSocket = join(this.dir, 'control.sock');
    this.journal = join(this.dir, 'journal.json');
    this.crashFile = join(this.dir, 'crash-point');
    mkdirSync(this.dataDir);
    const held = bindListeners([{ name: 'http', host: '127.0.0.1', port: 0 }]);
    this.listeners = held.listeners;
    this.#closeListeners = () => {
      held.close();
    };
    this.port = Number((held.listeners[0] as HeldListener).address.split(':').pop());
    this.daemon = options.daemon ?? kvDaemon(this.dataDir, options.daemonEnv);
  }

  /** The supervisor's pid (null when it is not running). */
  get supervisorPid(): number | null {
    return this.#supervisor?.pid ?? null;
  }

  /** Everything the supervisor and the daemons printed. */
  output(): string {
    return this.#output;
  }

  /** Starts a supervisor process (again, after {@link killSupervisor}). */
  async startSupervisor(): Promise<SupervisorStatus> {
    const fds = this.listeners.map((l) => l.fd);
    const config = {
      daemon: this.daemon,
      controlSocket: this.controlSocket,
      dataDir: this.dataDir,
      journal: this.journal,
      timeouts: { ...TEST_TIMEOUTS, ...this.#options.timeouts },
      restart: { initialDelayMs: 50, maxDelayMs: 1_000 },
    };
    const child = spawn(process.execPath, ['--expose-gc', SUPERVISOR_ENTRY], {
      stdio: ['ignore', 'pipe', 'pipe', ...fds, 'ipc'],
      detached: true,
      env: {
        ...process.env,
        ...this.#options.env,
        LISTEN_FDS: String(fds.length),
        LISTEN_FDNAMES: this.listeners.map((l) => l.name).join(':'),
        HANDOFF_LISTEN_ADDRESSES: this.listeners.map((l) => l.address).join(' '),
        HANDOFF_TESTKIT_CONFIG: JSON.stringify(config),
        HANDOFF_CRASH_FILE: this.crashFile,
        HANDOFF_TESTKIT_DIR: this.dir,
      },
    });
    this.#supervisor = child;
    if (child.pid !== undefined) this.#groups.add(child.pid);
    const tag = `[supervisor ${String(child.pid)}] `;
    child.stdout?.on('data', (d: Buffer) => (this.#output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.#output += d.toString()));
    child.on('exit', (code, signal) => {
      this.#output += `${tag}exited (${signal ?? String(code)})\n`;
      for (const resolve of this.#pending.values()) resolve({ ok: false, error: { code: 'SUPERVISOR_EXITED', message: `the supervisor exited (${signal ?? String(code)})` } });
      this.#pending.clear();
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`the supervisor was not ready within ${this.#options.startTimeoutMs ?? 20_000} ms\n${this.#output}`));
      }, this.#options.startTimeoutMs ?? 20_000);
      child.on('message', (raw) => {
        const m = raw as { id?: number; ok?: boolean; event?: Record<string, unknown>; ready?: SupervisorStatus; startFailed?: { message: string } };
        if (m.event) this.events.push(m.event);
        else if (m.ready) {
          clearTimeout(timer);
          resolve(m.ready);
        } else if (m.startFailed) {
          clearTimeout(timer);
          reject(new Error(`the supervisor could not start: ${m.startFailed.message}\n${this.#output}`));
        } else if (m.id !== undefined) {
          this.#pending.get(m.id)?.(m as Reply);
          this.#pending.delete(m.id);
        }
      });
      child.on('exit', () => {
        clearTimeout(timer);
        reject(new Error(`the supervisor exited during start-up\n${this.#output}`));
      });
    });
  }

  #ask(cmd: string, extra: Record<string, unknown> = {}): Promise<Reply> {
    const child = this.#supervisor;
    if (!child?.connected) return Promise.resolve({ ok: false, error: { code: 'NO_SUPERVISOR', message: 'no supervisor is running' } });
    const id = this.#nextId++;
    return new Promise((resolve) => {
      this.#pending.set(id, resolve);
      child.send({ id, cmd, ...extra });
    });
  }

  /** Asks for a handoff; resolves with the result, or rejects with the supervisor's error (`code` set). */
  async handoff(request: HandoffRequest = {}): Promise<HandoffResult> {
    const reply = await this.#ask('handoff', { request });
    if (reply.ok) return reply.value as HandoffResult;
    throw Object.assign(new Error(reply.error.message), { code: reply.error.code });
  }

  /** Like {@link handoff}, but resolves with the raw reply. */
  handoffReply(request: HandoffRequest = {}): Promise<Reply> {
    return this.#ask('handoff', { request });
  }

  /** The supervisor process's open fds and memory (after a full GC). */
  async resources(): Promise<{ fds: number; rss: number; heapUsed: number }> {
    const reply = await this.#ask('resources');
    if (!reply.ok) throw new Error(reply.error.message);
    return reply.value as { fds: number; rss: number; heapUsed: number };
  }

  async status(): Promise<SupervisorStatus> {
    const reply = await this.#ask('status');
    if (!reply.ok) throw new Error(reply.error.message);
    return reply.value as SupervisorStatus;
  }

  /** Kills the supervisor with `signal` (SIGKILL by default) and waits until it is gone. */
  async killSupervisor(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.#supervisor;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await exited;
  }

  /** Arms a crash point for the next time any process passes it (one-shot). */
  arm(point: string, signal: 'SIGKILL' | 'SIGSTOP' = 'SIGKILL'): void {
    this.disarm();
    writeFileSync(this.crashFile, `${point} ${signal}\n`);
  }

  disarm(): void {
    rmSync(this.crashFile, { force: true });
    if (existsSync(`${this.crashFile}.fired`)) unlinkSync(`${this.crashFile}.fired`);
  }

  /** The pid that fired the armed point, or null. */
  fired(): number | null {
    try {
      return Number(readFileSync(`${this.crashFile}.fired`, 'utf8').split(' ')[1]);
    } catch {
      return null;
    }
  }

  /** Waits for `predicate` with a deadline; fails with the cluster's output. */
  async waitFor<T>(what: string, predicate: () => T | Promise<T>, timeoutMs = 15_000): Promise<NonNullable<T>> {
    let value: T | undefined;
    const found = async (): Promise<boolean> => {
      value = await predicate();
      return value !== undefined && value !== null && value !== false;
    };
    await waitUntil(what, found, timeoutMs, { context: () => `--- output ---\n${this.#output}` });
    return value as NonNullable<T>;
  }

  /** GET /health on a fresh connection: the pid that serves, or null. */
  health(): Promise<{ pid: number; buildId: string; revision: number } | null> {
    return new Promise((resolve) => {
      const req = request({ host: '127.0.0.1', port: this.port, path: '/health', agent: false, timeout: 3_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
          try {
            resolve(res.statusCode === 200 ? (JSON.parse(body) as { pid: number; buildId: string; revision: number }) : null);
          } catch {
            resolve(null);
          }
        });
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => {
        resolve(null);
      });
      req.end();
    });
  }

  /** Who holds the data-directory lock. */
  lock(): LockProbe {
    return DataDirLock.probe(this.dataDir);
  }

  /** pids of live daemons working on this cluster's data directory. */
  daemonPids(): number[] {
    return processesWithEnv(`KV_DATA_DIR=${this.dataDir}`);
  }

  [Symbol.asyncDispose](): Promise<void> {
    for (const group of this.#groups) {
      try {
        process.kill(-group, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const pid of this.daemonPids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    if (this.#supervisor?.connected) this.#supervisor.disconnect();
    this.#closeListeners();
    rmSync(this.dir, { recursive: true, force: true });
    return Promise.resolve();
  }
}

/** Starts a cluster and waits until its daemon serves. */
export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const cluster = new Cluster(options);
  try {
    await cluster.startSupervisor();
    await cluster.waitFor('the daemon to serve', () => cluster.health());
  } catch (error) {
    await cluster[Symbol.asyncDispose]();
    throw error;
  }
  return cluster;
}
