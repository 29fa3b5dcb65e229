/**
 * `runConformance`: runs a daemon (any language) through every check of the conformance kit
 * and reports each with the PROTOCOL.md section it enforces.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { SupervisorError } from '@handoff/supervisor';
import { Cluster, TEST_TIMEOUTS, processesWithEnv } from '../cluster.js';
import { BareDaemon } from './bare.js';
import type { Program } from './bare.js';
import { summarize } from './report.js';
import type { ConformanceCheck, ConformanceReport } from './report.js';
import { CHECKS, CheckFailed, CheckSkipped, KNOB_NAMES, NeverServed, clusterProgram } from './scenarios.js';
import type { Context, KnobName } from './scenarios.js';

/** Options of {@link runConformance}. */
export interface ConformanceOptions {
  /** The daemon's command (a path, or a name in PATH) and its arguments. */
  readonly command: string;
  readonly args?: readonly string[];
  /** Extra environment of the daemon. */
  readonly env?: Readonly<Record<string, string>>;
  /** The daemon's working directory. Default: the current one. */
  readonly cwd?: string;
  /** Where the daemon answers JSON with its `pid`. Default `/health`. */
  readonly healthPath?: string;
  /** `kv`: the daemon keeps its data in the kv example's format; enables the handoffs to and from the reference daemon. */
  readonly reference?: 'kv' | null;
  /** Only these check ids (the prerequisites `spawn-contract` and `cold-start` always run). */
  readonly only?: readonly string[];
  /** Fault knobs: environment that makes the daemon misbehave on purpose. */
  readonly knobs?: Readonly<Partial<Record<KnobName, Readonly<Record<string, string>>>>>;
  /** Called as each check finishes (progress for a CLI). */
  readonly onCheck?: (check: ConformanceCheck) => void;
}

/** Bad input: no command, a command that does not exist, a daemon that never serves. The CLI exits 2 with its message. */
export class ConformanceInputError extends Error {}

/** Cleanups of the runs in progress, for an interrupted CLI. */
const active = new Set<() => void>();

/** Kills everything the runs in progress started and removes their temp directories at once (synchronously): for SIGINT. */
export function abortConformanceRuns(): void {
  for (const cleanup of [...active]) cleanup();
}

/** The kit's timeouts: short, so that a whole run takes about a minute. */
export const CONFORMANCE_TIMEOUTS = { ...TEST_TIMEOUTS, helloMs: 5_000, readyMs: 5_000, drainGraceMs: 300, totalMs: 20_000 } as const;

/** The reference kv daemon's entry point, or why it cannot be found. */
export function resolveReferenceKv(): { main: string } | { missing: string } {
  const require = createRequire(import.meta.url);
  const tries: (() => string)[] = [
    () => require.resolve('@handoff/example-kv/package.json'),
    // The supervisor binary's package depends on it (its embedded default daemon).
    () => createRequire(require.resolve('@handoff/supervisor-cli/package.json')).resolve('@handoff/example-kv/package.json'),
  ];
  for (const t of tries) {
    try {
      return { main: join(dirname(t()), 'dist', 'main.js') };
    } catch {
      // next
    }
  }
  return { missing: 'the reference daemon @handoff/example-kv is not installed (npm install --save-dev @handoff/example-kv)' };
}

/**
 * Runs the checks; never throws for a failing daemon (that is the report), only for bad input.
 * Everything it starts is killed and its temp directory removed, also on error.
 * @throws ConformanceInputError when the command is missing or does not exist, or the daemon never serves.
 */
export async function runConformance(options: ConformanceOptions): Promise<ConformanceReport> {
  const started = Date.now();
  if (!options.command) throw new ConformanceInputError('no daemon command given');
  const unknown = (options.only ?? []).filter((id) => !CHECKS.some((c) => c.id === id));
  if (unknown.length) throw new ConformanceInputError(`unknown check id(s) ${unknown.join(', ')}; the checks are: ${CHECKS.map((c) => c.id).join(', ')}`);
  for (const name of Object.keys(options.knobs ?? {})) if (!KNOB_NAMES.includes(name as KnobName)) throw new ConformanceInputError(`unknown knob ${name}; the knobs are: ${KNOB_NAMES.join(', ')}`);
  // Relative paths in the command line are the caller's: the daemon runs in its working directory.
  const program: Program = { command: options.command, args: options.args ?? [], env: options.env ?? {}, cwd: resolve(options.cwd ?? process.cwd()) };
  const dir = mkdtempSync(join(tmpdir(), 'handoff-conformance-'));
  const tag = { HANDOFF_CONFORMANCE_RUN: dir };
  const bareDataDir = join(dir, 'bare-data');
  mkdirSync(bareDataDir);
  mkdirSync(join(dir, 'run'), { mode: 0o700 });
  const healthPath = options.healthPath ?? '/health';
  let reference: Context['reference'] = null;
  if (options.reference === 'kv') {
    const kv = resolveReferenceKv();
    reference = 'missing' in kv ? kv : { program: (dataDir: string) => ({ command: process.execPath, args: [kv.main], env: { KV_DATA_DIR: dataDir, KV_BUILD_ID: 'reference' } }) };
  }
  /** A cluster being started (not yet ctx.cluster): killed and removed too if the run is interrupted meanwhile. */
  let pending: Cluster | null = null;
  const newCluster = (): Cluster =>
    new Cluster({
      daemon: ({ dataDir }) => ({ ...clusterProgram(program, dataDir), ...(program.cwd ? { cwd: program.cwd } : {}) }),
      timeouts: CONFORMANCE_TIMEOUTS,
      env: tag,
      healthPath,
    });
  const ctx: Context = {
    program,
    healthPath,
    knobs: options.knobs ?? {},
    reference,
    dir,
    tag,
    bare: null,
    bareDataDir,
    hello: null,
    cluster: null,
    clusterFailure: null,
    freshCluster: async () => {
      await ctx.cluster?.[Symbol.asyncDispose]();
      ctx.cluster = null;
      let cluster: Cluster | null = null;
      try {
        cluster = newCluster();
        pending = cluster;
        await cluster.startSupervisor();
        await cluster.waitFor('the daemon to serve', () => cluster?.health() ?? null);
        ctx.cluster = cluster;
        ctx.clusterFailure = null;
      } catch (error) {
        ctx.clusterFailure = supervisorSaid((error as Error).message);
        await cluster?.[Symbol.asyncDispose]();
      } finally {
        pending = null;
      }
      return ctx.cluster ?? Promise.reject(new Error(ctx.clusterFailure ?? 'no cluster'));
    },
  };
  const selected = (id: string): boolean => !options.only?.length || options.only.includes(id) || id === 'spawn-contract' || id === 'cold-start';
  const checks: ConformanceCheck[] = [];
  const killAll = (): void => {
    ctx.bare?.kill();
    for (const cluster of [ctx.cluster, pending]) if (cluster) void cluster[Symbol.asyncDispose]();
    for (const pid of processesWithEnv(`HANDOFF_CONFORMANCE_RUN=${dir}`)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  active.add(killAll);
  const record = (check: ConformanceCheck): void => {
    checks.push(check);
    options.onCheck?.(check);
  };
  try {
    // The first check (spawn-contract) waits for this daemon to serve: one that never does is bad input, not a report.
    const bareStarted = Date.now();
    try {
      ctx.bare = new BareDaemon(program, bareDataDir, join(dir, 'run', 'bare-control.sock'), tag);
    } catch (error) {
      if (error instanceof SupervisorError) throw new ConformanceInputError(error.message);
      throw error;
    }
    for (const def of CHECKS) {
      if (!selected(def.id)) continue;
      // A cluster check's time includes the start of its supervisor, when it starts one.
      const t0 = def.id === 'spawn-contract' ? bareStarted : Date.now();
      if (def.needs === 'cluster' && ctx.bare) {
        ctx.bare.kill();
        ctx.bare = null;
        await ctx.freshCluster().catch(() => undefined);
      }
      let status: ConformanceCheck['status'];
      let detail: string;
      try {
        if (def.needs === 'cluster' && !ctx.cluster && def.id !== 'cold-start') throw new CheckFailed(`not run: the supervisor could not cold-start the daemon (${ctx.clusterFailure ?? '?'})`);
        detail = await def.run(ctx);
        status = 'passed';
      } catch (error) {
        if (error instanceof NeverServed) throw new ConformanceInputError(error.message);
        status = error instanceof CheckSkipped ? 'skipped' : 'failed';
        detail = error instanceof CheckFailed || error instanceof CheckSkipped ? error.message : `error: ${(error as Error).message.split('\n')[0] ?? ''}`;
        if (def.id === 'cold-start' && ctx.clusterFailure) detail = ctx.clusterFailure;
      }
      record({ id: def.id, title: def.title, section: def.section, ok: status === 'passed', status, detail, ms: Date.now() - t0 });
    }
  } finally {
    active.delete(killAll);
    killAll();
  }
  return summarize([options.command, ...(options.args ?? [])], checks, Date.now() - started);
}

/** The supervisor's own one-line reason from its start-up error (its lines not in JSON). */
function supervisorSaid(message: string): string {
  const line = message.split('\n').find((l) => l.startsWith('handoff-supervisor:'));
  return line ?? message.split('\n')[0] ?? message;
}
