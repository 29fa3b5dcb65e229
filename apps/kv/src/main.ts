#!/usr/bin/env node
/**
 * handoff-kv: an HTTP key-value store that can be handed off with no refused connection and
 * no lost acknowledged write. `PUT /kv/<key>` (body = value) answers once the write is
 * fsynced; `GET /kv/<key>`; `GET /health` (pid, build, revision); `GET /ready` (200 when ready);
 * `GET /metrics` (Prometheus text: its plugins' reloads, calls and versions, keys, revision).
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
import { fileURLToPath } from 'node:url';
import { runDaemon } from '@handoff/core';
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
    res.end(`${plugins.metrics()}# HELP kv_keys Keys stored.\n# TYPE kv_keys gauge\nkv_keys ${store.size}\n# HELP kv_revision Last revision written.\n# TYPE kv_revision gauge\nkv_revision ${store.revision}\n`);
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
          return store.put(key, body).then((revision) => res.end(JSON.stringify({ revision })), (error: unknown) => {
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
  open: async ({ dataDir: dir, seal, reason }) => {
    // A slow open, with the lock held: for recovery tests.
    if (env.KV_OPEN_DELAY_MS) await sleep(Number(env.KV_OPEN_DELAY_MS));
    if (env.KV_OPEN_BLOCK_MS) blockEventLoop(Number(env.KV_OPEN_BLOCK_MS));
    const started = performance.now();
    const store = await KvStore.open(dir, { dropLast: env.KV_STALE === '1' && seal !== null });
    logLoaded('opened', started, { reason, revision: store.revision, ...store.loaded });
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
        catchUp: async (preloaded, { dataDir: dir, seal, reason }) => {
          if (env.KV_OPEN_DELAY_MS) await sleep(Number(env.KV_OPEN_DELAY_MS));
          if (env.KV_OPEN_BLOCK_MS) blockEventLoop(Number(env.KV_OPEN_BLOCK_MS));
          const started = performance.now();
          // KV_STALE (a fault for tests) opens one record behind the seal, preload or not.
          const store = env.KV_STALE === '1' && seal !== null ? await KvStore.open(dir, { dropLast: true }) : await KvStore.catchUp(dir, preloaded);
          logLoaded('caught-up', started, { reason, revision: store.revision, ...store.loaded });
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
  onServing: (info) => { console.log(JSON.stringify({ event: 'serving', pid: process.pid, buildId: env.KV_BUILD_ID ?? 'dev', ...info })); },
  stopSignal: stop.signal,
});
// A failure is one line saying why (e.g. a malformed HANDOFF_* variable, an unbound listener).
if (exit.code === 0) console.log(JSON.stringify({ event: 'exit', pid: process.pid, ...exit }));
else console.error(`handoff-kv: ${exit.reason}`);
process.exit(exit.code);
