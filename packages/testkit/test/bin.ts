/**
 * Runs the real handoff-supervisor and handoffctl binaries as an operator does — the binary
 * binds its own listeners from its configuration — in a temp directory, and cleans up
 * everything they started (process groups, daemons, the directory).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { onTestFailed, onTestFinished } from 'vitest';
import { ask } from '@handoff/supervisor-cli/client';
import type { Answer } from '@handoff/supervisor-cli/client';
import { processesWithEnv, waitUntil } from '../src/index.js';
import { kvCommand } from './kv.js';

const CLI = dirname(createRequire(import.meta.url).resolve('@handoff/supervisor-cli/package.json'));
export const MAIN = join(CLI, 'dist', 'main.js');
export const CTL = join(CLI, 'dist', 'ctl.js');
/** Set in the environment of every process a workspace starts (inherited by their children), to find and clean them up. */
const WORKSPACE_TAG = 'HANDOFF_TESTKIT_WORKSPACE';

/**
 * Runs `argv` to its end and resolves once its output is closed (on 'close': at 'exit' stdio
 * may still hold data). `timeoutMs` is a deadline, not a wait: a process still running then is
 * SIGKILLed (and the code is null), so a hung child fails the test instead of hanging it.
 */
export function runToExit(argv: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 10_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const [command = '', ...args] = argv;
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const deadline = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(deadline);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A loopback port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => {
        resolve(port);
      });
    });
    server.once('error', reject);
  });
}

/** A temp directory with a data dir and a private runtime dir. */
export class Workspace implements AsyncDisposable {
  readonly dir = mkdtempSync(join(tmpdir(), 'handoff-cli-'));
  readonly dataDir = join(this.dir, 'data');
  readonly runtimeDir = join(this.dir, 'run');
  readonly trigger = join(this.dir, 'run', 'trigger.sock');
  readonly #children: ChildProcess[] = [];

  constructor() {
    mkdirSync(this.dataDir);
    mkdirSync(this.runtimeDir, { mode: 0o700 });
    // Also when the test times out (its `await using` never reaches the end of its scope).
    onTestFinished(() => this[Symbol.asyncDispose]());
  }

  /** A configuration for the kv daemon on an ephemeral loopback port; `extra` is appended. */
  config(extra = '', daemonEnv: Record<string, string> = {}): string {
    const kv = kvCommand(this.dataDir, daemonEnv);
    const env = Object.entries(kv.env ?? {}).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join(', ');
    const text = `[daemon]
command = ${JSON.stringify(kv.command)}
args = ${JSON.stringify(kv.args)}
env = { ${env} }
data_dir = "data"

[[listeners]]
name = "http"
address = "127.0.0.1:0"

[sockets]
runtime_dir = "run"

[timeouts]
liveness = 1000
heartbeat = 100
drain_grace = 200
stop_grace = 500
shutdown = 10000
${extra}`;
    const file = join(this.dir, 'handoff.toml');
    writeFileSync(file, text);
    return file;
  }

  /**
   * {@link config} on a fixed free loopback port: a binary started again must find its
   * listeners in use, as in production (an ephemeral port would just bind anew).
   */
  async configOnFreePort(extra = '', daemonEnv: Record<string, string> = {}): Promise<string> {
    return (await this.configWithPort(() => extra, daemonEnv)).file;
  }

  /** {@link configOnFreePort}, with `extra` made from the port (say, a health URL on it). */
  async configWithPort(extra: (port: number) => string, daemonEnv: Record<string, string> = {}): Promise<{ file: string; port: number }> {
    const port = await freePort();
    const file = this.config(extra(port), daemonEnv);
    writeFileSync(file, readFileSync(file, 'utf8').replace('address = "127.0.0.1:0"', `address = "127.0.0.1:${String(port)}"`));
    return { file, port };
  }

  /** Starts handoff-supervisor with `args`; collects its output. */
  start(args: readonly string[], env: Record<string, string> = {}): Running {
    const child = spawn(process.execPath, [MAIN, ...args], { cwd: this.dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HANDOFF_LOG_FORMAT: 'json', [WORKSPACE_TAG]: this.dir, ...env } });
    this.#children.push(child);
    return new Running(child, this.trigger);
  }

  /** Runs handoffctl to completion, on the trigger socket. */
  ctl(args: readonly string[], via: readonly string[] = ['--socket', this.trigger]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [CTL, ...via, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('exit', (code) => {
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** Runs handoffctl to completion, finding the trigger socket through the configuration file. */
  ctlWithConfig(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return this.ctl(args, ['--config', join(this.dir, 'handoff.toml')]);
  }

  /** Daemons working on this workspace's data. */
  daemons(): number[] {
    return processesWithEnv(`KV_DATA_DIR=${this.dataDir}`);
  }

  /** Every process this workspace started, directly or not (keepers, supervisors, daemons, holders), tagged by environment. */
  processes(): number[] {
    return processesWithEnv(`${WORKSPACE_TAG}=${this.dir}`);
  }

  /** The supervisor processes (keepers and their children) of this workspace. */
  supervisors(): number[] {
    return this.processes().filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(MAIN);
      } catch {
        return false;
      }
    });
  }

  [Symbol.asyncDispose](): Promise<void> {
    for (const c of this.#children) {
      try {
        if (c.pid) process.kill(-c.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const pid of [...this.processes(), ...this.daemons()]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    return Promise.resolve();
  }
}

/** Prints the supervisors' output when the test fails. */
export function showOnFailure(...running: Running[]): void {
  onTestFailed(() => {
    for (const r of running) console.error(`--- supervisor ${String(r.child.pid)} output ---\n${r.output}`);
  });
}

/** A running supervisor binary. */
export class Running {
  readonly child: ChildProcess;
  readonly trigger: string;
  output = '';
  readonly exited: Promise<number | null>;

  constructor(child: ChildProcess, trigger: string) {
    this.child = child;
    this.trigger = trigger;
    child.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => child.once('exit', (code) => {
      resolve(code);
    }));
  }

  /** Waits until the supervisor answers status (with a deadline), and returns it. */
  async ready(timeoutMs = 20_000): Promise<Answer> {
    let exitCode: number | null | undefined;
    void this.exited.then((c) => (exitCode = c));
    let ready: Answer | undefined;
    await waitUntil('the supervisor to serve', async () => {
      if (exitCode !== undefined) throw new Error(`the supervisor exited with ${String(exitCode)}:\n${this.output}`);
      const [status] = await ask(this.trigger, { cmd: 'status' }).catch(() => []);
      if (status?.type === 'status' && status.pid === this.child.pid && status.lifecycle === 'serving') ready = status;
      return ready !== undefined;
    }, timeoutMs, { context: () => this.output });
    return ready as Answer;
  }

  async status(): Promise<Answer> {
    const [s] = await ask(this.trigger, { cmd: 'status' });
    if (!s) throw new Error('no status');
    return s;
  }

  /** The port of the first listener, from status. */
  async port(): Promise<number> {
    const s = await this.status();
    const address = (s.listeners as { address: string }[])[0]?.address ?? '';
    return Number(address.split(':').pop());
  }
}

/** One HTTP request on a fresh connection: status and body. */
export function call(port: number, method: string, path: string, body = ''): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => {
        resolve({ status: res.statusCode ?? 0, body: text });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}
