#!/usr/bin/env node
/**
 * handoff-kv: an HTTP key-value store that can be handed off with no refused connection and
 * no lost acknowledged write. `PUT /kv/<key>` (body = value) answers once the write is
 * fsynced; `GET /kv/<key>`; `GET /health` (pid, build, revision); `GET /ready` (200 when ready);
 * `GET /metrics` (Prometheus text: its plugins' reloads, calls and versions, keys, revision,
 * requests and jobs served since the service started, across handoffs).
 *
 * Long-lived work (PROTOCOL.md §6, "Long-lived work" and "Handover state"):
 *   POST /jobs?steps=N&stepMs=M[&id=ID][&interruptible=1]   starts a background job that writes
 *       its progress to the key `job/<id>` after each of N steps (M ms apart), then "done".
 *       A handoff's drain waits for running jobs (up to its deadline); interruptible ones are
 *       cancelled at once; with &finishOnDrain=1 a job wraps up at its next step when told of
 *       the drain. A job cut by the drain is handed to the new version, which resumes it from
 *       its last step. `GET /jobs` lists the running ones.
 *   The request and job counters are handed to each new version too (and kept on a rollback).
 *   KV_DRAIN_HOOK_FAIL=1 (the drain-start hook throws), KV_HANDOVER_PAD=<bytes> (pads the
 *   handover state), KV_HANDOVER_BAD=1 (a state that does not encode), &ignoreCut=1 on a job
 *   (it never stops when cut): faults for tests.
 *
 * Reloadable in place, without a handoff (`handoffctl reload …`, PROTOCOL.md §6 "Reload"):
 *   KV_VALIDATE_PLUGIN  the `validate` plugin's module (default: the built-in one, accepting
 *                       every value): `validate(key, value)` returns null or why a PUT is
 *                       refused (422). `handoffctl reload validate` swaps it. KV_PLUGIN_MODE
 *                       `worker` or `inThread` (default: a worker for KV_VALIDATE_PLUGIN, the
 *                       daemon's own thread for the built-in)
 *   KV_CONFIG           a JSON file of settings ({"maxValueBytes": n}: 413 beyond), re-read
 *                       by `handoffctl reload --daemon-config`
 *
 *   KV_DATA_DIR   data directory (default: the supervisor's HANDOFF_DATA_DIR)
 *   KV_PORT       port without a supervisor (8080)
 *   KV_BUILD_ID   build id reported in Hello    KV_SEAL_DELAY_MS, KV_SEAL_FAIL, KV_STALE,
 *   KV_PRELOAD    0: no preload (below)         KV_FAIL_START, KV_DIE_AFTER_MS, KV_OPEN_DELAY_MS,
 *                                               KV_PRELOAD_DELAY_MS, KV_PRELOAD_FAIL, KV_OPEN_BLOCK_MS
 *                                               (open/catch-up blocks the event loop: a fault),
 *                                               KV_UNHEALTHY_AFTER_MS (GET /ready answers 503
 *                                               once this long up): fault injection for tests
 *
 * As a successor it preloads the log before its Hello, read-only, while the incumbent still
 * serves, and after Begin replays only what was appended since (PROTOCOL.md §7, §16).
 * KV_PRELOAD_MS: how long the preload may run from the start (default 70% of the supervisor's
 * [timeouts] hello, HANDOFF_HELLO_MS).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { WorkTracker, runDaemon } from '@handoff/core';
import type { HandedOver } from '@handoff/core';
import { HotPlugin, ReloadManager } from '@handoff/reload';
import { KvStore } from './store.js';
import type { Preloaded } from './store.js';
import { DEFAULT_SETTINGS, readSettings } from './settings.js';
import type { Settings } from './settings.js';

const env = process.env;
// Under handoff-supervisor the data directory comes from its [daemon] data_dir.
const dataDir = env.KV_DATA_DIR || env.HANDOFF_DATA_DIR || '';
if (!dataDir) {
  console.error('handoff-kv: no data directory: run it under handoff-supervisor (which passes [daemon] data_dir), or set KV_DATA_DIR');
  process.exit(2);
}
if (env.KV_FAIL_START === '1') {
  console.error('handoff-kv: KV_FAIL_START=1, exiting');
  process.exit(3);
}
if (env.KV_DIE_AFTER_MS) {
  // A daemon that crashes a while after starting: for crash-loop tests.
  setTimeout(() => {
    console.error('handoff-kv: KV_DIE_AFTER_MS elapsed, crashing');
    process.exit(4);
  }, Number(env.KV_DIE_AFTER_MS)).unref();
}
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
/** A fault for tests: long synchronous work, as a daemon that does not slice it would do. */
const blockEventLoop = (ms: number): void => {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    // busy
  }
};
/** The `validate` plugin's contract. */
interface Validate {
  validate(key: string, value: string): string | null;
}
const validateFile = env.KV_VALIDATE_PLUGIN || fileURLToPath(new URL('./plugins/validate.js', import.meta.url));
// An operator's module runs isolated in a worker; the built-in one (this package's own code,
// called on every PUT) in this thread, where a call costs what a function call costs.
if (env.KV_PLUGIN_MODE && env.KV_PLUGIN_MODE !== 'worker' && env.KV_PLUGIN_MODE !== 'inThread') {
  console.error(`handoff-kv: KV_PLUGIN_MODE=${env.KV_PLUGIN_MODE} is neither worker nor inThread`);
  process.exit(2);
}
/** A KV_* number of milliseconds, or undefined when unset; a bad one ends the start naming it. */
function msFromEnv(name: string): number | undefined {
  const value = env[name];
  if (value === undefined || value === '') return undefined;
  if (!/^\d+$/.test(value)) {
    console.error(`handoff-kv: ${name}=${value} is not a whole number of milliseconds`);
    process.exit(2);
  }
  return Number(value);
}
const pluginMode = env.KV_PLUGIN_MODE === 'worker' || env.KV_PLUGIN_MODE === 'inThread' ? env.KV_PLUGIN_MODE : env.KV_VALIDATE_PLUGIN ? 'worker' : 'inThread';
const probationMs = msFromEnv('KV_PLUGIN_PROBATION_MS');
const drainMs = msFromEnv('KV_PLUGIN_DRAIN_MS');
let validator: HotPlugin<Validate>;
try {
  validator = await HotPlugin.load<Validate>({
    name: 'validate',
    file: validateFile,
    methods: ['validate'],
    mode: pluginMode,
    ...(probationMs === undefined ? {} : { probation: { ms: probationMs, maxFailures: 0 } }),
    ...(drainMs === undefined ? {} : { drainTimeoutMs: drainMs }),
    // A version that answers anything but null or a reason would refuse or accept at random.
    selfTest: async (call) => {
      const answer: unknown = await call('validate', 'self-test', 'self-test');
      if (answer !== null && typeof answer !== 'string') throw new Error(`validate('self-test', 'self-test') returned ${typeof answer}; it must return null (accept) or a string (why not)`);
    },
  });
} catch (error) {
  console.error(`handoff-kv: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(2);
}
const plugins = new ReloadManager([validator]);
let settings: Settings = DEFAULT_SETTINGS;
if (env.KV_CONFIG) {
  try {
    settings = readSettings(env.KV_CONFIG);
  } catch (error) {
    console.error(`handoff-kv: ${(error as Error).message}`);
    process.exit(2);
  }
}

/** Counters of the service, not of this process: handed to each new version, kept on a rollback. */
interface Counters {
  puts: number;
  gets: number;
  jobsFinished: number;
  jobsResumed: number;
  takeovers: number;
}
let counters: Counters = { puts: 0, gets: 0, jobsFinished: 0, jobsResumed: 0, takeovers: 0 };
/** Long-lived work: the background jobs. */
const work = new WorkTracker();
let jobsStarted = 0;
/** A job: what its checkpoint holds, so that a new version can resume it. */
interface Job {
  readonly id: string;
  readonly steps: number;
  readonly stepMs: number;
  readonly interruptible: boolean;
  /** Told that a drain started, it wraps up at its next step instead of running to the end. */
  readonly finishOnDrain: boolean;
  readonly ignoreCut: boolean;
  /** Steps done. */
  readonly step: number;
}
const JOB_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** A job from a checkpoint handed over, or undefined when it is not one. */
function jobOf(value: unknown): Job | undefined {
  const j = value as Partial<Job> | null;
  if (typeof j !== 'object' || j === null || typeof j.id !== 'string' || !JOB_ID.test(j.id)) return undefined;
  const whole = (n: unknown, max: number): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= max;
  if (!whole(j.steps, 100_000) || !whole(j.stepMs, 60_000) || !whole(j.step, j.steps)) return undefined;
  return { id: j.id, steps: j.steps, stepMs: j.stepMs, step: j.step, interruptible: j.interruptible === true, finishOnDrain: j.finishOnDrain === true, ignoreCut: j.ignoreCut === true };
}

/**
 * Runs a job from `job.step` under the work tracker, writing its status to `job/<id>` after
 * each step: its users read there that a restart is coming, or that it was interrupted and
 * where the new version resumes it.
 */
async function runJob(store: KvStore, job: Job, resumed: boolean): Promise<void> {
  const status = (step: number, state: string, notice = ''): Promise<number> =>
    store.put(`job/${job.id}`, JSON.stringify({ step, steps: job.steps, state, pid: process.pid, resumed, ...(notice ? { notice } : {}) }));
  await work.run({ kind: 'job', description: `${job.id}, ${job.steps} steps`, interruptible: job.interruptible, resume: job }, async (item) => {
    let notice = '';
    item.draining.addEventListener('abort', () => {
      notice = `restarting: this job ${job.interruptible ? 'is interrupted and resumed by the new version' : `finishes here first (within ${Math.max(0, Math.round(((item.drainDeadline ?? Date.now()) - Date.now()) / 1000))} s)`}`;
    }, { once: true });
    const cut = job.ignoreCut ? new AbortController().signal : item.signal;
    for (let step = job.step; step < job.steps; step++) {
      if (job.finishOnDrain && item.draining.aborted) {
        // A job that can stop at any step boundary finishes early rather than keep the drain waiting.
        await status(step, 'done', `finished early at step ${step} of ${job.steps}: the service is restarting`);
        counters.jobsFinished++;
        return;
      }
      try {
        await delay(job.stepMs, undefined, { signal: cut });
      } catch {
        // Cut by the drain: the checkpoint says where the new version resumes it (a stop hands nothing over).
        await status(step, 'interrupted', stop.signal.aborted ? `interrupted by a stop at step ${step} of ${job.steps}; start it again to finish it` : `interrupted by a restart at step ${step} of ${job.steps}; the new version resumes it`);
        return;
      }
      await status(step + 1, 'running', notice);
      item.checkpoint({ ...job, step: step + 1 });
    }
    await status(job.steps, 'done');
    counters.jobsFinished++;
  });
}

/** Starts a job in the background; its failure (say, the store sealed under a job that ignores its cut) is one line on stderr. */
function startJob(store: KvStore, job: Job, resumed: boolean): void {
  runJob(store, job, resumed).catch((error: unknown) => {
    console.error(`handoff-kv: job ${job.id} stopped: ${error instanceof Error ? error.message : String(error)}`);
  });
}

/** POST /jobs?steps=N&stepMs=M[&id=ID][&interruptible=1][&finishOnDrain=1][&ignoreCut=1]. */
function postJob(store: KvStore, req: IncomingMessage, res: ServerResponse): void {
  const q = new URL(req.url ?? '/', 'http://kv').searchParams;
  const job = jobOf({
    id: q.get('id') ?? `${process.pid}-${++jobsStarted}`,
    steps: Number(q.get('steps') ?? '10'),
    stepMs: Number(q.get('stepMs') ?? '100'),
    step: 0,
    interruptible: q.get('interruptible') === '1',
    finishOnDrain: q.get('finishOnDrain') === '1',
    ignoreCut: q.get('ignoreCut') === '1',
  });
  if (work.draining) {
    // A drain has begun: a job started now would be cut at once. The next version takes it.
    res.statusCode = 503;
    res.setHeader('retry-after', '1');
    res.end('restarting: start the job again in a moment\n');
    return;
  }
  if (!job) {
    res.statusCode = 400;
    res.end('a job needs steps 0–100000, stepMs 0–60000 and an id of 1–64 of A–Z a–z 0–9 _ -\n');
    return;
  }
  startJob(store, job, false);
  res.statusCode = 202;
  res.end(JSON.stringify({ id: job.id, key: `job/${job.id}` }));
}

/** What the drain cut and handed over: jobs the new version resumes once it serves. */
let handedOver: HandedOver | null = null;
/** Jobs this process's last drain cut: resumed here if the handoff rolls back (this version serves on). */
let cutHere: HandedOver['cut'] = [];
let serving: KvStore | undefined;
/** Takes what the incumbent handed over: its counters now, its cut jobs once this version serves. */
function takeHandover(given: HandedOver | null): void {
  handedOver = given;
  const c = given?.state as { counters?: Partial<Counters> } | null | undefined;
  if (c?.counters) counters = { ...counters, ...c.counters };
  counters.takeovers++;
}

const stop = new AbortController();
process.once('SIGTERM', () => { stop.abort(); });
process.once('SIGINT', () => { stop.abort(); });

function handle(store: KvStore, req: IncomingMessage, res: ServerResponse): void {
  let key: string;
  try {
    key = decodeURIComponent((req.url ?? '/').replace(/^\/kv\//, ''));
  } catch {
    // A malformed escape (say /kv/%zz) is the client's error, not a reason to crash.
    res.statusCode = 400;
    res.end('malformed percent-encoding in the key\n');
    return;
  }
  if (req.url?.startsWith('/slow?ms=')) {
    // A long request, to test drains slower than the liveness timeout. The headers go out at
    // once, so a client knows the request is in the daemon's hands.
    res.writeHead(200);
    res.flushHeaders();
    setTimeout(() => res.end('slow done'), Math.min(Number(req.url.slice('/slow?ms='.length)) || 0, 60_000));
  } else if (req.url === '/ready') {
    // Readiness, for the supervisor's health check during a probation.
    const failing = env.KV_UNHEALTHY_AFTER_MS !== undefined && process.uptime() * 1000 >= Number(env.KV_UNHEALTHY_AFTER_MS);
    res.statusCode = failing ? 503 : 200;
    res.end(failing ? 'unhealthy (KV_UNHEALTHY_AFTER_MS)\n' : 'ready\n');
  } else if (req.url === '/health') {
    res.end(JSON.stringify({ pid: process.pid, buildId: env.KV_BUILD_ID ?? 'dev', revision: store.revision, keys: store.size }));
  } else if (req.url === '/metrics') {
    res.setHeader('content-type', 'text/plain; version=0.0.4');
    const c = counters;
    res.end(
      `${plugins.metrics()}# HELP kv_keys Keys stored.\n# TYPE kv_keys gauge\nkv_keys ${store.size}\n# HELP kv_revision Last revision written.\n# TYPE kv_revision gauge\nkv_revision ${store.revision}\n` +
        `# HELP kv_requests_total Key-value requests (GET and PUT of /kv/<key>) served since the service started, across handoffs.\n# TYPE kv_requests_total counter\nkv_requests_total{method="PUT"} ${c.puts}\nkv_requests_total{method="GET"} ${c.gets}\n` +
        `# HELP kv_jobs_finished_total Jobs finished since the service started.\n# TYPE kv_jobs_finished_total counter\nkv_jobs_finished_total ${c.jobsFinished}\n` +
        `# HELP kv_jobs_resumed_total Jobs a new version resumed after a handoff cut them.\n# TYPE kv_jobs_resumed_total counter\nkv_jobs_resumed_total ${c.jobsResumed}\n` +
        `# HELP kv_takeovers_total Handoffs this service went through.\n# TYPE kv_takeovers_total counter\nkv_takeovers_total ${c.takeovers}\n# HELP kv_jobs_running Jobs running now.\n# TYPE kv_jobs_running gauge\nkv_jobs_running ${work.size}\n`,
    );
  } else if (req.method === 'POST' && (req.url === '/jobs' || req.url?.startsWith('/jobs?'))) {
    postJob(store, req, res);
  } else if (req.method === 'GET' && req.url === '/jobs') {
    res.end(JSON.stringify(work.items()));
  } else if (req.method === 'PUT' && req.url?.startsWith('/kv/')) {
    let body = '';
    req.setEncoding('utf8').on('data', (chunk: string) => (body += chunk)).on('end', () => {
      const bytes = Buffer.byteLength(body);
      const { maxValueBytes } = settings;
      if (maxValueBytes !== null && bytes > maxValueBytes) {
        res.statusCode = 413;
        res.end(`a value of ${bytes} bytes is over maxValueBytes ${maxValueBytes} (${env.KV_CONFIG ?? 'KV_CONFIG'})\n`);
        return;
      }
      validator.call('validate', key, body).then(
        (refusal) => {
          if (refusal !== null) {
            res.statusCode = 422;
            res.end(`${refusal}\n`);
            return;
          }
          return store.put(key, body).then((revision) => {
            counters.puts++;
            res.end(JSON.stringify({ revision }));
          }, (error: unknown) => {
            res.statusCode = 503;
            res.end(error instanceof Error ? error.message : String(error));
          });
        },
        (error: unknown) => {
          res.statusCode = 500;
          res.end(`the validate plugin failed: ${error instanceof Error ? error.message : String(error)}\n`);
        },
      );
    });
  } else if (req.method === 'GET' && req.url?.startsWith('/kv/')) {
    const value = store.get(key);
    counters.gets++;
    res.statusCode = value === undefined ? 404 : 200;
    res.end(value ?? '');
  } else {
    res.statusCode = 404;
    res.end();
  }
}

/** One JSON line on stdout saying how the data was loaded (tests and operators read it). */
function logLoaded(event: string, started: number, fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ event, pid: process.pid, ms: Math.round(performance.now() - started), ...fields }));
}

// A successor reads the log before its Hello, while the incumbent serves, and after Begin
// replays only its tail: the time nobody accepts no longer grows with the data.
const preloading = env.KV_PRELOAD !== '0';

const exit = await runDaemon<KvStore, Preloaded>({
  buildId: env.KV_BUILD_ID ?? 'dev',
  dataDir,
  listeners: { http: { port: Number(env.KV_PORT ?? 8080), host: '127.0.0.1' } },
  open: async ({ dataDir: dir, seal, reason, handedOver: given }) => {
    // A slow open, with the lock held: for recovery tests.
    if (env.KV_OPEN_DELAY_MS) await sleep(Number(env.KV_OPEN_DELAY_MS));
    if (env.KV_OPEN_BLOCK_MS) blockEventLoop(Number(env.KV_OPEN_BLOCK_MS));
    const started = performance.now();
    const store = await KvStore.open(dir, { dropLast: env.KV_STALE === '1' && seal !== null });
    logLoaded('opened', started, { reason, revision: store.revision, ...store.loaded });
    if (reason === 'takeover' || reason === 'recover') takeHandover(given);
    serving = store;
    return store;
  },
  ...(preloading
    ? {
        // How long the preload may run from the process's start (default 7 s, for the
        // supervisor's default [timeouts] hello of 10 s): raise both together.
        ...(env.KV_PRELOAD_MS ? { preloadMs: Number(env.KV_PRELOAD_MS) } : {}),
        // Before Hello, read-only, without the lock: the incumbent still appends.
        // Stopped by `signal` (its time is up), it returns what it has: the tail is longer then.
        preload: async ({ dataDir: dir, signal }) => {
          const started = performance.now();
          if (env.KV_PRELOAD_DELAY_MS) await sleep(Number(env.KV_PRELOAD_DELAY_MS));
          if (env.KV_PRELOAD_FAIL === '1') throw new Error('preload failed (KV_PRELOAD_FAIL=1)');
          const preloaded = await KvStore.preload(dir, signal);
          logLoaded('preloaded', started, { revision: preloaded.revision, offset: preloaded.offset, partial: preloaded.partial });
          return preloaded;
        },
        // After Begin, with the lock held: the records appended since the preload.
        catchUp: async (preloaded, { dataDir: dir, seal, reason, handedOver: given }) => {
          if (env.KV_OPEN_DELAY_MS) await sleep(Number(env.KV_OPEN_DELAY_MS));
          if (env.KV_OPEN_BLOCK_MS) blockEventLoop(Number(env.KV_OPEN_BLOCK_MS));
          const started = performance.now();
          // KV_STALE (a fault for tests) opens one record behind the seal, preload or not.
          const store = env.KV_STALE === '1' && seal !== null ? await KvStore.open(dir, { dropLast: true }) : await KvStore.catchUp(dir, preloaded);
          logLoaded('caught-up', started, { reason, revision: store.revision, ...store.loaded });
          takeHandover(given);
          serving = store;
          return store;
        },
        warmUp: () => {
          KvStore.warmUp();
          return Promise.resolve();
        },
      }
    : {}),
  revisions: (store) => [store.revision],
  fingerprint: (store) => `rev-${store.revision}`,
  seal: async (store) => {
    if (env.KV_SEAL_DELAY_MS) await sleep(Number(env.KV_SEAL_DELAY_MS));
    if (env.KV_SEAL_FAIL === '1') throw new Error('seal failed (KV_SEAL_FAIL=1)');
    await store.close();
    // Handed to the new version (its open or catchUp), with the jobs the drain cut.
    return {
      counters,
      ...(env.KV_HANDOVER_PAD ? { pad: 'x'.repeat(Number(env.KV_HANDOVER_PAD)) } : {}),
      ...(env.KV_HANDOVER_BAD === '1' ? { bad: 10n ** 30n } : {}),
    };
  },
  work,
  onDrainStart: ({ cause, deadline, pending, cutWork }) => {
    if (env.KV_DRAIN_HOOK_FAIL === '1') throw new Error('KV_DRAIN_HOOK_FAIL=1');
    console.log(JSON.stringify({ event: 'drain-start', pid: process.pid, cause, inMs: deadline - Date.now(), jobs: pending.length, cutWork }));
  },
  onDrainEnd: ({ cause, finished, cut, abandoned }) => {
    // Resumed here if the handoff rolls back: those that stopped when cut (one that did not still runs).
    cutHere = cut.filter((c) => c.released);
    console.log(JSON.stringify({ event: 'drain-end', pid: process.pid, cause, abandoned, finished, cut: cut.map((c) => ({ id: jobOf(c.resume)?.id ?? null, step: jobOf(c.resume)?.step ?? null, why: c.why, released: c.released })) }));
  },
  handler: (store) => (req, res) => { handle(store, req, res); },
  plugins,
  ...(env.KV_CONFIG
    ? {
        reloadConfig: ({ progress }) => {
          const file = env.KV_CONFIG ?? '';
          progress(`reading ${file}`);
          settings = readSettings(file); // throws, keeping the settings in force, when invalid
          return Promise.resolve(`${file} ${settings.digest} (maxValueBytes ${String(settings.maxValueBytes ?? 'unlimited')})`);
        },
      }
    : {}),
  onServing: (info) => {
    console.log(JSON.stringify({ event: 'serving', pid: process.pid, buildId: env.KV_BUILD_ID ?? 'dev', ...info }));
    // A new version resumes the jobs its incumbent's drain cut, from their last step; after a
    // rolled-back handoff (serving again after a drain), this version resumes its own.
    const cut = handedOver?.cut ?? cutHere;
    handedOver = null;
    cutHere = [];
    for (const item of cut) {
      const job = item.kind === 'job' ? jobOf(item.resume) : undefined;
      if (!job || !serving) continue;
      counters.jobsResumed++;
      console.log(JSON.stringify({ event: 'job-resumed', pid: process.pid, id: job.id, step: job.step, steps: job.steps }));
      startJob(serving, job, true);
    }
  },
  stopSignal: stop.signal,
});
// A failure is one line saying why (e.g. a malformed HANDOFF_* variable, an unbound listener).
if (exit.code === 0) console.log(JSON.stringify({ event: 'exit', pid: process.pid, ...exit }));
else console.error(`handoff-kv: ${exit.reason}`);
process.exit(exit.code);
