/**
 * The systems under comparison. Each starts an app on a port, replaces its program on demand
 * (reporting when the trigger went out and when the new version alone served), names the
 * processes that supervise it, and stops, leaving nothing running.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ask } from '@handoff/supervisor-cli/client';
import type { Answer } from '@handoff/supervisor-cli/client';
import { isAlive, stopProcess, waitForDeath } from '@handoff/supervisor/internal';
import { waitUntil } from '@handoff/testkit';
import { answers, exited, readPid, sleep } from './proc.js';
import { BenchAbort } from './types.js';
import type { Abort, Drained, HandoffTiming } from './types.js';

const require = createRequire(import.meta.url);
const APPS = join(dirname(fileURLToPath(import.meta.url)), '..', 'apps');
const SUPERVISOR_MAIN = join(dirname(require.resolve('@handoff/supervisor-cli/package.json')), 'dist', 'main.js');
const KV_MAIN = join(dirname(require.resolve('@handoff/example-kv/package.json')), 'dist', 'main.js');
const WS_MAIN = join(dirname(require.resolve('@handoff/example-ws/package.json')), 'dist', 'main.js');
const START_TIMEOUT_MS = 30_000;
/** For waits whose end is a measured moment (a restart's commit): poll every 2 ms. */
const FINE = { everyMs: 2 } as const;
const STOP_GRACE_MS = 3_000;
/** The supervisor's own `[timeouts] total` when the configuration does not set it. */
const SUPERVISOR_TOTAL_MS = 120_000;
/** How much longer than the supervisor's `total` the harness waits for a handoff's answer. */
const ANSWER_MARGIN_MS = 15_000;
/** How long a killed process may take to exit before it is SIGKILLed (kill and restart). */
const EXIT_WAIT_MS = 30_000;

/**
 * What runs under a system: the stateless hello app, the example key-value daemon, or the
 * example WebSocket daemon (apps/ws-chat; no data directory).
 */
export type AppKind = 'hello' | 'kv' | 'ws';

export interface System {
  /** Stable id, used in JSON and for --only. */
  readonly id: string;
  readonly label: string;
  readonly app: AppKind;
  /** This project's (a handoff that did not commit fails the run), not a peer's. */
  readonly ours: boolean;
  /** Why this system cannot run here, or null. */
  unavailable(): string | null;
  start(port: number): Promise<void>;
  handoff(): Promise<HandoffTiming>;
  /** The processes playing the supervisor (for CPU and memory); empty when there is none. */
  supervisorPids(): readonly number[];
  stop(): Promise<void>;
}

/** A temp directory the system owns; removed by `stop`. */
function scratch(name: string): string {
  return mkdtempSync(join(tmpdir(), `handoff-bench-${name}-`));
}

function capture(child: ChildProcess): () => string {
  let out = '';
  const add = (d: Buffer): void => {
    out = (out + d.toString()).slice(-20_000);
  };
  child.stdout?.on('data', add);
  child.stderr?.on('data', add);
  return () => out;
}

/** Runs `f`; if it throws, adds the process's output so far to the error. */
async function withOutput<T>(output: () => string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (error) {
    throw new Error(`${(error as Error).message}\n--- its output ---\n${output()}`, { cause: error });
  }
}

/** How a {@link HandoffSystem} runs. */
export interface HandoffOptions {
  /** An existing data directory to serve (the data-size curve); default a new one. */
  readonly dataDir?: string;
  /**
   * The hello app with no data directory at all (runDaemon without open/seal), under a
   * configuration without `[daemon] data_dir`: the supervisor hands off by overlap.
   */
  readonly stateless?: boolean;
  /** More environment for the daemon (e.g. `KV_PRELOAD=0`). */
  readonly env?: Readonly<Record<string, string>>;
  readonly id?: string;
  readonly label?: string;
  /** The supervisor's `[timeouts] total`, which bounds a handoff; default the supervisor's (120 s). */
  readonly totalTimeoutMs?: number;
  /**
   * `[daemon] move_connections`: false gives the behaviour from before connections moved (the
   * drain closes idle keep-alive connections after the drain grace; the ws daemon closes its
   * WebSocket clients with 1012). Default: not written, the supervisor's default (true).
   */
  readonly moveConnections?: boolean;
}

/** This project: handoff-supervisor running the app through @handoff/core. */
export class HandoffSystem implements System {
  readonly id: string;
  readonly label: string;
  readonly app: AppKind;
  readonly ours = true;
  readonly #options: HandoffOptions;
  #dir = '';
  #child: ChildProcess | undefined;
  #log: () => string = () => '';
  #trigger = '';
  #supervisorPid: number | null = null;

  constructor(app: AppKind, options: HandoffOptions = {}) {
    if (options.stateless === true && app !== 'hello') throw new Error('only the hello app has a stateless variant');
    this.app = app;
    this.#options = options;
    this.id = options.id ?? (options.stateless === true ? 'handoff-stateless-hello' : `handoff-${app}`);
    this.label = options.label ?? (options.stateless === true ? 'handoff (stateless, overlap)' : app === 'kv' ? 'handoff (key-value daemon)' : app === 'ws' ? 'handoff (WebSocket daemon)' : 'handoff');
  }

  unavailable(): null {
    return null;
  }

  async start(port: number): Promise<void> {
    this.#dir = scratch(this.id);
    mkdirSync(join(this.#dir, 'run'), { mode: 0o700 });
    const o = this.#options;
    let script: string;
    let env: Record<string, string>;
    let data: string | null = null;
    if (o.stateless === true) {
      // No data directory anywhere: neither the app nor the configuration has one.
      [script, env] = [join(APPS, 'hello-stateless.js'), {}];
    } else if (this.app === 'ws') {
      // The WebSocket daemon keeps no data: configured without a data directory.
      [script, env] = [WS_MAIN, { WS_BUILD_ID: 'bench' }];
    } else {
      data = o.dataDir ?? join(this.#dir, 'data');
      mkdirSync(data, { recursive: true });
      [script, env] = this.app === 'kv' ? [KV_MAIN, { KV_DATA_DIR: data, KV_BUILD_ID: 'kv' }] : [join(APPS, 'hello-handoff.js'), { BENCH_DATA_DIR: data }];
    }
    const config = join(this.#dir, 'handoff.toml');
    writeFileSync(
      config,
      `[daemon]
command = ${JSON.stringify(process.execPath)}
args = [${JSON.stringify(script)}]
env = ${tomlTable({ ...env, ...o.env })}
${data === null ? '' : `data_dir = ${JSON.stringify(data)}\n`}${o.moveConnections === undefined ? '' : `move_connections = ${String(o.moveConnections)}\n`}${process.env.BENCH_SUCCESSOR_NICE === undefined ? '' : `successor_nice = ${Number(process.env.BENCH_SUCCESSOR_NICE)}\n`}
[[listeners]]
name = "http"
address = "127.0.0.1:${port}"
backlog = 4096

[sockets]
runtime_dir = ${JSON.stringify(join(this.#dir, 'run'))}

[supervisor]
log_format = "json"
${o.totalTimeoutMs === undefined ? '' : `\n[timeouts]\ntotal = ${String(o.totalTimeoutMs)}\n`}`,
    );
    const child = spawn(process.execPath, [SUPERVISOR_MAIN, '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    this.#log = capture(child);
    await withOutput(this.#log, async () => {
      await waitUntil('handoff-supervisor to serve', () => {
        if (child.exitCode !== null) throw new Error(`handoff-supervisor exited ${child.exitCode}`);
        const serving = this.#log().split('\n').find((l) => l.includes('"msg":"serving"'));
        if (serving === undefined) return false;
        const line = JSON.parse(serving) as { trigger: string; pid: number; keeperPid?: number };
        this.#trigger = line.trigger;
        // The keeper (this child) and the supervisor it runs: both are the supervisor's cost.
        this.#supervisorPid = line.pid;
        return true;
      }, START_TIMEOUT_MS);
      await waitUntil(`the ${this.app} daemon to answer on port ${port}`, () => answers(port), START_TIMEOUT_MS);
    });
  }

  async handoff(): Promise<HandoffTiming> {
    const triggeredAt = Date.now();
    const fail = (abort: Abort): HandoffTiming => ({ triggeredAt, committedAt: Date.now(), ok: false, abort, detail: `${abort.code}: ${abort.reason}` });
    // Bounded: the supervisor gives a handoff up after its `total`; the harness waits a margin more.
    const boundMs = (this.#options.totalTimeoutMs ?? SUPERVISOR_TOTAL_MS) + ANSWER_MARGIN_MS;
    let lines: Answer[];
    try {
      const asked = ask(this.#trigger, { cmd: 'upgrade' }, undefined, { timeoutMs: boundMs });
      asked.catch(() => undefined);
      const answered = await Promise.race([asked, sleep(boundMs).then(() => null)]);
      if (answered === null) return fail({ code: BenchAbort.NoAnswer, reason: `no answer to the trigger within ${boundMs} ms` });
      lines = answered;
    } catch (error) {
      return fail({ code: BenchAbort.NoAnswer, reason: (error as Error).message });
    }
    const committedAt = Date.now();
    // (The result may be followed by probation lines.)
    const result = lines.find((l) => l.type === 'result');
    if (result === undefined) {
      const refused = lines.find((l) => l.type === 'error');
      return fail(refused ? { code: String(refused.code), reason: String(refused.message) } : { code: BenchAbort.NoResult, reason: `the supervisor answered no result (last line: ${JSON.stringify(lines.at(-1) ?? null)})` });
    }
    const phases = (result.timings as { phases?: Record<string, number> } | undefined)?.phases ?? {};
    const drained = drainedOf(result.drained);
    if (result.committed === true) return { triggeredAt, committedAt, ok: true, abort: null, phases, drained, detail: `committed, pid ${String(result.incumbentPid)}` };
    const why = result.abortReason as Abort | null | undefined;
    const abort = why ?? { code: `outcome ${String(result.outcome)}`, reason: typeof result.aftermath === 'string' ? result.aftermath : 'no reason given' };
    return { triggeredAt, committedAt, ok: false, abort, phases, drained, detail: `${String(result.outcome)}: ${abort.code}: ${abort.reason}` };
  }

  supervisorPids(): readonly number[] {
    return [this.#child?.pid, this.#supervisorPid].filter((p): p is number => typeof p === 'number');
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (child?.pid !== undefined && child.exitCode === null) {
      try {
        await Promise.race([ask(this.#trigger, { cmd: 'stop' }), sleep(10_000)]);
      } catch {
        // not reachable: signal it instead
      }
      const gone = await Promise.race([exited(child).then(() => true), sleep(10_000).then(() => false)]);
      if (!gone) await stopProcess(child.pid, STOP_GRACE_MS, exited(child));
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }

  /** The supervisor's output so far, for failure messages. */
  log(): string {
    return this.#log();
  }
}

/** A handoff result's `drained` (null when the old daemon did not drain, or a supervisor without it). */
function drainedOf(value: unknown): Drained | null {
  const d = value as { openConnsRemaining?: unknown; workCut?: unknown; connsOffered?: unknown } | null | undefined;
  if (typeof d !== 'object' || d === null) return null;
  const n = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  return { openConnsRemaining: n(d.openConnsRemaining), workCut: n(d.workCut), connsOffered: n(d.connsOffered) };
}

function tomlTable(env: Readonly<Record<string, string>>): string {
  const entries = Object.entries(env);
  return entries.length === 0 ? '{}' : `{ ${entries.map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join(', ')} }`;
}

/** The app's command and environment when it runs on its own (no handoff supervisor). */
function standalone(app: AppKind, port: number, dir: string, drain: boolean, dataDir = join(dir, 'data')): { script: string; env: Record<string, string> } {
  if (app === 'kv') {
    mkdirSync(dataDir, { recursive: true });
    // runDaemon drains and seals on SIGTERM/SIGINT: the key-value daemon always drains.
    return { script: KV_MAIN, env: { KV_DATA_DIR: dataDir, KV_PORT: String(port), KV_BUILD_ID: 'kv' } };
  }
  // runDaemon drains on SIGTERM; with no supervisor to move them to, its WebSocket clients are closed (1012).
  if (app === 'ws') return { script: WS_MAIN, env: { WS_LISTEN: `127.0.0.1:${port}`, WS_BUILD_ID: 'bench' } };
  return { script: join(APPS, 'hello.cjs'), env: { PORT: String(port), BENCH_DRAIN: drain ? '1' : '0' } };
}

/** The naive way: SIGTERM the process, wait for it to exit, start the new one. */
export class NaiveRestart implements System {
  readonly id: string;
  readonly label: string;
  readonly app: AppKind;
  readonly ours = false;
  readonly #dataDir: string | undefined;
  #dir = '';
  #port = 0;
  #child: ChildProcess | undefined;

  /** `dataDir`: an existing data directory to serve (for the data-size curve); default a new one. */
  constructor(app: AppKind, dataDir?: string, label?: string) {
    this.app = app;
    this.#dataDir = dataDir;
    this.id = `naive-${app}`;
    this.label = label ?? (app === 'kv' ? 'kill and restart (key-value daemon)' : 'kill and restart');
  }

  unavailable(): null {
    return null;
  }

  async start(port: number): Promise<void> {
    this.#dir = scratch(this.id);
    this.#port = port;
    await this.#spawn();
  }

  async #spawn(): Promise<void> {
    const { script, env } = standalone(this.app, this.#port, this.#dir, false, this.#dataDir);
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    this.#child = child;
    await withOutput(capture(child), () => waitUntil(`the ${this.app} app to answer on port ${this.#port}`, () => answers(this.#port, '/health', 200), START_TIMEOUT_MS, FINE));
  }

  async handoff(): Promise<HandoffTiming> {
    const triggeredAt = Date.now();
    const old = this.#child;
    if (old?.pid !== undefined) {
      old.kill('SIGTERM');
      // Bounded: one that does not exit on SIGTERM is SIGKILLed.
      if (!(await Promise.race([exited(old).then(() => true), sleep(EXIT_WAIT_MS).then(() => false)]))) await stopProcess(old.pid, STOP_GRACE_MS, exited(old));
    }
    await this.#spawn();
    return { triggeredAt, committedAt: Date.now(), ok: true, abort: null, detail: `restarted, pid ${String(this.#child?.pid)}` };
  }

  supervisorPids(): readonly number[] {
    return [];
  }

  async stop(): Promise<void> {
    if (this.#child?.pid !== undefined && this.#child.exitCode === null) await stopProcess(this.#child.pid, STOP_GRACE_MS, exited(this.#child));
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** The subset of PM2's programmatic API the benchmark uses. */
interface Pm2 {
  connect(cb: (error: Error | null) => void): void;
  start(options: object, cb: (error: Error | null) => void): void;
  reload(name: string, cb: (error: Error | null) => void): void;
  restart(name: string, cb: (error: Error | null) => void): void;
  delete(name: string, cb: (error: Error | null) => void): void;
  killDaemon(cb: (error: Error | null) => void): void;
  disconnect(): void;
}

/**
 * PM2, from the npm registry, with its home in a temp directory (so a user's PM2 is never
 * touched). One daemon serves every PM2 system of a run; {@link Pm2Home.close} kills it.
 */
export class Pm2Home {
  static #instance: Pm2Home | undefined;
  readonly home: string;
  readonly #pm2: Pm2;

  private constructor(home: string, pm2: Pm2) {
    this.home = home;
    this.#pm2 = pm2;
  }

  /** PM2 reads PM2_HOME once, when first loaded: so one home per benchmark process. */
  static async open(): Promise<Pm2Home> {
    if (Pm2Home.#instance) return Pm2Home.#instance;
    const home = scratch('pm2-home');
    process.env.PM2_HOME = home;
    // Loaded by its real path (pnpm links it), so PM2's own dependencies resolve beside it.
    // Seen here: once the process had run a handoff, Node's cached realpath kept the linked
    // path, and PM2's require('commander') failed.
    const pm2 = require(realpathSync.native(require.resolve('pm2'))) as Pm2;
    const self = new Pm2Home(home, pm2);
    await self.call((cb) => { pm2.connect(cb); });
    Pm2Home.#instance = self;
    return self;
  }

  static get opened(): Pm2Home | undefined {
    return Pm2Home.#instance;
  }

  call(f: (cb: (error: Error | null) => void) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      f((error) => {
        if (error) reject(error);
        else resolve();
      });
    });
  }

  get pm2(): Pm2 {
    return this.#pm2;
  }

  /** PM2's daemon ("God"). */
  daemonPid(): number | null {
    return readPid(join(this.home, 'pm2.pid'));
  }

  async close(): Promise<void> {
    const pid = this.daemonPid();
    try {
      await Promise.race([this.call((cb) => { this.#pm2.killDaemon(cb); }), sleep(10_000)]);
    } catch {
      // fall through to the signal
    }
    this.#pm2.disconnect();
    if (pid !== null && isAlive(pid)) await stopProcess(pid, STOP_GRACE_MS);
    rmSync(this.home, { recursive: true, force: true });
    Pm2Home.#instance = undefined;
  }
}

export function pm2Available(): string | null {
  try {
    require.resolve('pm2');
    return null;
  } catch {
    return 'pm2 is not installed (pnpm install)';
  }
}

/** PM2: cluster mode `reload` (with or without the app draining on SIGINT), or fork mode `restart`. */
export class Pm2System implements System {
  readonly id: string;
  readonly label: string;
  readonly app: AppKind;
  readonly ours = false;
  readonly #mode: 'cluster' | 'fork';
  readonly #drain: boolean;
  #dir = '';
  #name = '';
  #port = 0;

  constructor(mode: 'cluster' | 'fork', drain: boolean, app: AppKind) {
    this.#mode = mode;
    this.#drain = drain;
    this.app = app;
    const how = mode === 'cluster' ? `reload${drain ? ', drain on SIGINT' : ', no drain'}` : 'restart';
    this.id = `pm2-${mode}-${mode === 'cluster' ? (drain ? 'drain' : 'nodrain') : 'restart'}-${app}`;
    this.label = `PM2 ${mode} ${how}${app === 'kv' ? ' (key-value daemon)' : ''}`;
  }

  unavailable(): string | null {
    return pm2Available();
  }

  async start(port: number): Promise<void> {
    const home = await Pm2Home.open();
    this.#dir = scratch(this.id);
    this.#port = port;
    this.#name = `bench-${this.id}-${port}`;
    const { script, env } = standalone(this.app, port, this.#dir, this.#drain);
    await home.call((cb) => {
      home.pm2.start({ name: this.#name, script, exec_mode: this.#mode, instances: 1, env, autorestart: true, merge_logs: true, output: '/dev/null', error: '/dev/null' }, cb);
    });
    await waitUntil(`PM2's ${this.app} app to answer on port ${port}`, () => answers(port, '/health', 200), START_TIMEOUT_MS);
  }

  async handoff(): Promise<HandoffTiming> {
    const home = await Pm2Home.open();
    const triggeredAt = Date.now();
    await home.call((cb) => {
      if (this.#mode === 'cluster') home.pm2.reload(this.#name, cb);
      else home.pm2.restart(this.#name, cb);
    });
    const committedAt = Date.now();
    return { triggeredAt, committedAt, ok: true, abort: null, detail: this.#mode === 'cluster' ? 'reloaded' : 'restarted' };
  }

  supervisorPids(): readonly number[] {
    const pid = Pm2Home.opened?.daemonPid();
    return pid === null || pid === undefined ? [] : [pid];
  }

  async stop(): Promise<void> {
    const home = Pm2Home.opened;
    if (home && this.#name) {
      await home.call((cb) => { home.pm2.delete(this.#name, cb); }).catch(() => undefined);
      await waitUntil(`PM2's app to stop on port ${this.#port}`, async () => !(await answers(this.#port, '/health', 200)), 10_000).catch(() => undefined);
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

/** nginx's own binary upgrade: USR2 (a new master), WINCH (old workers finish), QUIT (old master). */
export class NginxUpgrade implements System {
  readonly id = 'nginx-upgrade';
  readonly label = 'nginx binary upgrade';
  readonly app: AppKind = 'hello';
  readonly ours = false;
  readonly #binary: string | null;
  #dir = '';

  constructor() {
    this.#binary = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx'].find((p) => existsSync(p)) ?? null;
  }

  unavailable(): string | null {
    return this.#binary === null ? 'nginx is not installed (Debian: apt-get install nginx-light); skipped' : null;
  }

  #pidFile(): string {
    return join(this.#dir, 'nginx.pid');
  }

  async start(port: number): Promise<void> {
    this.#dir = scratch('nginx');
    const d = this.#dir;
    // The same answer as the hello app; nginx serves it itself (nothing behind it).
    writeFileSync(
      join(d, 'nginx.conf'),
      `worker_processes 1;
daemon on;
pid ${this.#pidFile()};
error_log ${join(d, 'error.log')} warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${join(d, 'body')};
  proxy_temp_path ${join(d, 'proxy')};
  fastcgi_temp_path ${join(d, 'fastcgi')};
  uwsgi_temp_path ${join(d, 'uwsgi')};
  scgi_temp_path ${join(d, 'scgi')};
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / { default_type text/plain; return 200 "hello\\n"; }
  }
}
`,
    );
    const binary = this.#binary ?? 'nginx';
    const r = spawnSync(binary, ['-p', d, '-c', join(d, 'nginx.conf')], { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0) throw new Error(`nginx did not start: ${r.stderr}`);
    await waitUntil(`nginx to answer on port ${port}`, () => answers(port, '/health', 200), START_TIMEOUT_MS);
  }

  async handoff(): Promise<HandoffTiming> {
    const old = readPid(this.#pidFile());
    if (old === null) throw new Error('nginx has no pid file');
    const triggeredAt = Date.now();
    process.kill(old, 'SIGUSR2');
    // The new master renames the old pid file to .oldbin and writes its own.
    let fresh: number | null = null;
    await waitUntil('the new nginx master', () => {
      fresh = readPid(this.#pidFile());
      return fresh !== null && fresh !== old && existsSync(`${this.#pidFile()}.oldbin`);
    }, 10_000, FINE);
    process.kill(old, 'SIGWINCH');
    process.kill(old, 'SIGQUIT');
    if (!(await waitForDeath(old, 30_000))) throw new Error(`the old nginx master ${old} did not exit within 30 s`);
    return { triggeredAt, committedAt: Date.now(), ok: true, abort: null, detail: `new master ${String(fresh)}` };
  }

  supervisorPids(): readonly number[] {
    return [readPid(this.#pidFile()), readPid(`${this.#pidFile()}.oldbin`)].filter((p): p is number => p !== null);
  }

  async stop(): Promise<void> {
    const masters = this.supervisorPids();
    for (const pid of masters) {
      try {
        process.kill(pid, 'SIGQUIT');
      } catch {
        // gone
      }
    }
    for (const pid of masters) if (!(await waitForDeath(pid, 10_000))) await stopProcess(pid, STOP_GRACE_MS);
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
