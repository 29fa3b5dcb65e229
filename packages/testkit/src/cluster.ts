/**
 * A fixture: the real `handoff-supervisor` binary running a daemon of your choice, in a temp
 * directory, driven through its trigger socket as `handoffctl` drives it. The test process
 * holds the listening socket and passes it to each supervisor it starts (`LISTEN_FDS`, with
 * `LISTEN_PID` set as systemd sets it) — systemd's part in socket activation — so that a
 * killed supervisor can be started again with the same listener. Everything the fixture
 * starts is killed and the directory removed on dispose, also when a test fails:
 *
 *     await using cluster = await startCluster({ daemon: ({ dataDir }) => ({ command: '/usr/bin/node', args: ['app.js'], env: { DATA: dataDir } }) });
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DataDirLock } from '@handoff/core';
import type { LockProbe } from '@handoff/core';
import { ErrorCode, LIST_SEPARATOR, SpawnEnv } from '@handoff/protocol';
import type { RestartPolicy, Timeouts } from '@handoff/protocol';
import { bindListeners } from '@handoff/supervisor';
import type { DaemonCommand, HandoffRequest, HandoffResult, HeldListener, SupervisorStatus } from '@handoff/supervisor';
import { spawnWithListenPid } from '@handoff/supervisor/internal';
import { ask } from '@handoff/supervisor-cli/client';
import type { Answer } from '@handoff/supervisor-cli/client';
import { getJson } from './http.js';
import { waitForValue, waitUntil } from './wait.js';

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

/** The cluster's paths a daemon command may need. */
export interface ClusterPaths {
  /** The temp directory of the cluster. */
  readonly dir: string;
  /** The daemon's data directory (the supervisor's `data_dir`). */
  readonly dataDir: string;
}

/** What a daemon under test reports on GET /health: at least its pid. */
export interface Health {
  readonly pid: number;
  readonly [key: string]: unknown;
}

/** Options of {@link startCluster}. */
export interface ClusterOptions {
  /** The daemon under test, given the cluster's paths. */
  readonly daemon: (paths: ClusterPaths) => DaemonCommand;
  readonly timeouts?: Partial<Timeouts>;
  /** Restart policy; default: 50 ms doubling to 1 s, 5 failures a minute. */
  readonly restart?: Partial<RestartPolicy>;
  /** Extra environment of the supervisor process (and so of the daemons it starts). */
  readonly env?: Readonly<Record<string, string>>;
  /** How long to wait for the supervisor to serve. Default 20 s. */
  readonly startTimeoutMs?: number;
  /** Called with the cluster's paths before the supervisor first starts (e.g. to seed the data directory). */
  readonly prepare?: (paths: ClusterPaths) => void;
  /**
   * A daemon without a data directory: the configuration has no `data_dir` (its handoffs
   * overlap, PROTOCOL.md section 7), and the checks look for no lock.
   */
  readonly stateless?: boolean;
  /** The HTTP path the daemon answers with JSON holding its `pid`. Default `/health`. */
  readonly healthPath?: string;
  /**
   * The probation window of a new version (`[probation] window`). Default 0: a committed
   * version is the one restarts run at once, so that a scenario's outcome does not depend on
   * when a kill lands within a window.
   */
  readonly probationMs?: number;
  /** `[daemon] move_connections`: idle connections move to the successor (default true, as the binary's). */
  readonly moveConnections?: boolean;
}

/** A reply of the supervisor to a handoff: its result, or its error. */
export type Reply = { readonly ok: true; readonly value: HandoffResult } | { readonly ok: false; readonly error: { readonly code: string; readonly message: string } };

/** The built supervisor binary of `@handoff/supervisor-cli`. */
const SUPERVISOR_MAIN = join(dirname(createRequire(import.meta.url).resolve('@handoff/supervisor-cli/package.json')), 'dist', 'main.js');

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

function toml(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(toml).join(', ')}]`;
  if (typeof value === 'object' && value !== null) return `{ ${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)} = ${toml(v)}`).join(', ')} }`;
  return String(value);
}

/** A running supervisor with its daemon. */
export class Cluster implements AsyncDisposable {
  readonly dir: string;
  readonly dataDir: string;
  readonly runtimeDir: string;
  readonly controlSocket: string;
  readonly triggerSocket: string;
  readonly journal: string;
  readonly config: string;
  readonly crashFile: string;
  readonly listeners: readonly HeldListener[];
  readonly port: number;
  readonly daemon: DaemonCommand;
  /** The daemon keeps no data directory (no `data_dir`; no lock to check). */
  readonly stateless: boolean;
  /** Set in the environment of the supervisor and of every daemon it starts, to find them. */
  readonly #tag: string;
  readonly #closeListeners: () => void;
  readonly #options: ClusterOptions;
  #supervisor: ChildProcess | null = null;
  readonly #groups = new Set<number>();
  #output = '';
  /** The supervisor's log lines (JSON), parsed: its events. */
  readonly events: Record<string, unknown>[] = [];

  /** Prepares a cluster (the directory, the listener, the configuration); {@link startCluster} also starts it. */
  constructor(options: ClusterOptions) {
    this.#options = options;
    this.stateless = options.stateless === true;
    this.dir = mkdtempSync(join(tmpdir(), 'handoff-test-'));
    this.dataDir = join(this.dir, 'data');
    this.runtimeDir = join(this.dir, 'run');
    this.controlSocket = join(this.runtimeDir, 'control.sock');
    this.triggerSocket = join(this.runtimeDir, 'trigger.sock');
    this.journal = join(this.dir, 'journal.json');
    this.config = join(this.dir, 'handoff.toml');
    this.crashFile = join(this.dir, 'crash-point');
    this.#tag = `HANDOFF_TESTKIT_CLUSTER=${this.dir}`;
    mkdirSync(this.dataDir);
    mkdirSync(this.runtimeDir, { mode: 0o700 });
    const held = bindListeners([{ name: 'http', host: '127.0.0.1', port: 0 }]);
    this.listeners = held.listeners;
    this.#closeListeners = () => {
      held.close();
    };
    this.port = Number((held.listeners[0] as HeldListener).address.split(':').pop());
    this.daemon = options.daemon({ dir: this.dir, dataDir: this.dataDir });
    this.#writeConfig();
  }

  #writeConfig(): void {
    const t = { ...TEST_TIMEOUTS, ...this.#options.timeouts };
    const r = { initialDelayMs: 50, maxDelayMs: 1_000, ...this.#options.restart };
    const keys: Record<string, keyof Timeouts> = { drain_grace: 'drainGraceMs', drain: 'drainMs', seal: 'sealMs', ready: 'readyMs', total: 'totalMs', liveness: 'livenessMs', heartbeat: 'heartbeatMs', hello: 'helloMs', stop_grace: 'stopGraceMs' };
    const d = this.daemon;
    const lines = [
      '[daemon]',
      `command = ${toml(d.command)}`,
      `args = ${toml(d.args ?? [])}`,
      `env = ${toml(d.env ?? {})}`,
      ...(d.cwd ? [`cwd = ${toml(d.cwd)}`] : []),
      ...(this.stateless ? [] : [`data_dir = ${toml(this.dataDir)}`]),
      ...(this.#options.moveConnections === false ? ['move_connections = false'] : []),
      '',
      '[[listeners]]',
      'name = "http"',
      `address = ${toml(`127.0.0.1:${this.port}`)}`,
      '',
      '[sockets]',
      `runtime_dir = ${toml(this.runtimeDir)}`,
      '',
      '[supervisor]',
      `journal = ${toml(this.journal)}`,
      'log_format = "json"',
      '',
      '[timeouts]',
      ...Object.entries(keys).flatMap(([key, field]) => (t[field] === undefined ? [] : [`${key} = ${t[field]}`])),
      '',
      '[restart]',
      ...(r.policy ? [`policy = ${toml(r.policy)}`] : []),
      `initial_delay = ${r.initialDelayMs}`,
      `max_delay = ${r.maxDelayMs}`,
      ...(r.maxFailures !== undefined ? [`max_failures = ${r.maxFailures}`] : []),
      ...(r.windowMs !== undefined ? [`window = ${r.windowMs}`] : []),
      '',
      '[probation]',
      `window = ${this.#options.probationMs ?? 0}`,
    ];
    writeFileSync(this.config, `${lines.join('\n')}\n`);
  }

  /** The supervisor's pid (null when it is not running). */
  get supervisorPid(): number | null {
    const s = this.#supervisor;
    return s && s.exitCode === null && s.signalCode === null ? (s.pid ?? null) : null;
  }

  /** Everything the supervisor and the daemons printed. */
  output(): string {
    return this.#output;
  }

  /** Starts `handoff-supervisor` (again, after {@link killSupervisor}) and waits until it serves. */
  async startSupervisor(): Promise<SupervisorStatus> {
    const fds = this.listeners.map((l) => l.fd);
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
    Object.assign(env, this.#options.env, {
      [SpawnEnv.ListenFds]: String(fds.length),
      [SpawnEnv.ListenFdNames]: this.listeners.map((l) => l.name).join(LIST_SEPARATOR),
      HANDOFF_CRASH_FILE: this.crashFile,
      [this.#tag.split('=')[0] as string]: this.dir,
    });
    const child = spawnWithListenPid(
      { command: process.execPath, args: [SUPERVISOR_MAIN, '--config', this.config], env: {}, cwd: this.dir },
      { env, stdio: ['ignore', 'pipe', 'pipe', ...fds], detached: true },
    );
    // Its own process group, so that dispose kills whatever it leaves behind.
    this.#supervisor = child;
    if (child.pid !== undefined) this.#groups.add(child.pid);
    const tag = `[supervisor ${String(child.pid)}] `;
    let partial = '';
    child.stdout?.on('data', (d: Buffer) => {
      const text = d.toString();
      this.#output += text;
      partial += text;
      for (let i = partial.indexOf('\n'); i >= 0; i = partial.indexOf('\n')) {
        const line = partial.slice(0, i);
        partial = partial.slice(i + 1);
        if (line.startsWith('{"level"')) {
          try {
            this.events.push(JSON.parse(line) as Record<string, unknown>);
          } catch {
            // a daemon's line that merely looks like JSON
          }
        }
      }
    });
    child.stderr?.on('data', (d: Buffer) => (this.#output += d.toString()));
    const exited = new Promise<string>((resolve) => {
      child.once('exit', (code, signal) => {
        const how = signal ?? String(code);
        this.#output += `${tag}exited (${how})\n`;
        resolve(how);
      });
    });
    let exit: string | null = null;
    void exited.then((how) => (exit = how));
    let status: SupervisorStatus | null = null;
    await waitUntil(
      'the supervisor to serve',
      async () => {
        if (exit !== null) throw new Error(`the supervisor exited (${exit}) during start-up\n${this.#output}`);
        const [s] = await ask(this.triggerSocket, { cmd: 'status' }).catch(() => []);
        if (s?.type === 'status' && s.pid === child.pid && s.lifecycle === 'serving') status = s as unknown as SupervisorStatus;
        return status !== null;
      },
      this.#options.startTimeoutMs ?? 20_000,
      { context: () => this.#output },
    );
    return status as unknown as SupervisorStatus;
  }

  /**
   * Waits until the binary's keeper has restarted its supervisor after `dead` (a supervisor
   * process that died) and the new one serves; returns its status.
   */
  async awaitRestartedSupervisor(dead: number, timeoutMs = 30_000): Promise<SupervisorStatus> {
    return this.waitFor(
      `a supervisor other than ${dead} to serve`,
      async () => {
        const [s] = await ask(this.triggerSocket, { cmd: 'status' }).catch(() => []);
        return s?.type === 'status' && s.supervisorPid !== dead && s.lifecycle === 'serving' ? (s as unknown as SupervisorStatus) : null;
      },
      timeoutMs,
    );
  }

  /** Asks for a handoff through the trigger socket; resolves with the result, or rejects with the supervisor's error (`code` set). */
  async handoff(req: HandoffRequest = {}): Promise<HandoffResult> {
    const reply = await this.handoffReply(req);
    if (reply.ok) return reply.value;
    throw Object.assign(new Error(reply.error.message), { code: reply.error.code });
  }

  /** Like {@link handoff}, but resolves with the reply, also when the supervisor dies before it answers. */
  async handoffReply(req: HandoffRequest = {}): Promise<Reply> {
    const change = req.daemon ?? {};
    const answers = await ask(this.triggerSocket, {
      cmd: 'upgrade',
      ...(change.command !== undefined ? { command: change.command } : {}),
      ...(change.args !== undefined ? { args: change.args } : {}),
      ...(change.env !== undefined ? { env: change.env } : {}),
    }).catch((error: unknown): Answer[] => [{ type: 'error', code: ErrorCode.SupervisorGone, message: (error as Error).message }]);
    // The result may be followed by probation lines.
    const result = answers.find((a) => a.type === 'result');
    if (result) return { ok: true, value: result as unknown as HandoffResult };
    const last = answers.at(-1);
    if (last?.type === 'error') return { ok: false, error: { code: String(last.code), message: String(last.message) } };
    return { ok: false, error: { code: ErrorCode.SupervisorGone, message: `the supervisor went away before the outcome (last answer: ${JSON.stringify(last ?? null)})` } };
  }

  /** The supervisor's status, through the trigger socket. */
  async status(): Promise<SupervisorStatus & { readonly listeners: readonly { name: string; address: string }[] }> {
    const [s] = await ask(this.triggerSocket, { cmd: 'status' });
    if (s?.type !== 'status') throw new Error(`no status from the supervisor: ${JSON.stringify(s ?? null)}`);
    return s as unknown as SupervisorStatus & { readonly listeners: readonly { name: string; address: string }[] };
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
  waitFor<T>(what: string, predicate: () => T | Promise<T>, timeoutMs = 15_000): Promise<NonNullable<T>> {
    return waitForValue(what, predicate, timeoutMs, { context: () => `--- output ---\n${this.#output}` });
  }

  /** GET the health path on a fresh connection: what the serving daemon says about itself (its pid at least), or null. */
  async health(): Promise<Health | null> {
    const answer = await getJson(this.port, this.#options.healthPath ?? '/health');
    return answer && typeof answer.pid === 'number' ? (answer as unknown as Health) : null;
  }

  /** Who holds the data-directory lock. */
  lock(): LockProbe {
    return DataDirLock.probe(this.dataDir);
  }

  /** pids of live daemons this cluster's supervisors started (the supervisor itself excluded). */
  daemonPids(): number[] {
    const supervisors = new Set(this.supervisorPids());
    return processesWithEnv(this.#tag).filter((pid) => !supervisors.has(pid) && !this.#groups.has(pid));
  }

  /** The binary's processes (keepers and the supervisors they run) of this cluster. */
  supervisorPids(): number[] {
    return processesWithEnv(this.#tag).filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(SUPERVISOR_MAIN);
      } catch {
        return false;
      }
    });
  }

  [Symbol.asyncDispose](): Promise<void> {
    for (const group of this.#groups) {
      try {
        process.kill(-group, 'SIGKILL');
      } catch {
        // gone
      }
      try {
        process.kill(group, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const pid of processesWithEnv(this.#tag)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    this.#closeListeners();
    rmSync(this.dir, { recursive: true, force: true });
    return Promise.resolve();
  }
}

/** Starts a cluster and waits until its daemon serves. */
export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const cluster = new Cluster(options);
  try {
    options.prepare?.({ dir: cluster.dir, dataDir: cluster.dataDir });
    await cluster.startSupervisor();
    await cluster.waitFor('the daemon to serve', () => cluster.health());
  } catch (error) {
    await cluster[Symbol.asyncDispose]();
    throw error;
  }
  return cluster;
}
