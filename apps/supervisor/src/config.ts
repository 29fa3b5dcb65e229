/**
 * The supervisor's configuration: a TOML file parsed with smol-toml and validated against a
 * schema. Every error names the file, the line, the key, what was found and what is expected;
 * unknown keys are rejected (with a suggestion). Without a file, an embedded default runs the
 * example key-value daemon on a loopback port, with its data and sockets in private
 * temporary directories.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { TomlError, parse } from 'smol-toml';
import { ConfigError } from './errors.js';

/** A listener from the configuration. */
export type ListenerConfig =
  | { readonly name: string; readonly host: string; readonly port: number; readonly backlog: number }
  | { readonly name: string; readonly path: string; readonly mode: number; readonly backlog: number };

/** The validated configuration. */
export interface Config {
  readonly source: string;
  readonly daemon: { readonly command: string; readonly args: readonly string[]; readonly env: Readonly<Record<string, string>>; readonly cwd: string; readonly dataDir: string | null; readonly successorNice: number; readonly moveConnections: boolean };
  readonly listeners: readonly ListenerConfig[];
  readonly controlSocket: string;
  readonly triggerSocket: string;
  readonly journal: string;
  readonly pidFile: string;
  readonly logFormat: 'auto' | 'json' | 'pretty';
  readonly logFile: string | null;
  readonly metrics: { readonly host: string; readonly port: number } | null;
  readonly timeouts: {
    readonly drainGraceMs: number;
    readonly drainMs: number;
    readonly sealMs: number;
    readonly readyMs: number;
    readonly totalMs: number;
    readonly livenessMs: number;
    readonly heartbeatMs: number;
    readonly helloMs: number;
    readonly stopGraceMs: number;
    readonly shutdownMs: number;
  };
  readonly restart: { readonly policy: 'on-failure' | 'never'; readonly initialDelayMs: number; readonly maxDelayMs: number; readonly maxFailures: number; readonly windowMs: number };
  readonly hooks: { readonly preStart: string | null; readonly postStop: string | null; readonly preHandoff: string | null; readonly preHandoffTimeoutMs: number };
  /** The health check: an HTTP GET of `url` (answering `expectStatus`, or below 400 without it), or a shell `command` exiting 0. */
  readonly health: { readonly url: string | null; readonly command: string | null; readonly expectStatus: number | null; readonly timeoutMs: number; readonly intervalMs: number; readonly failures: number } | null;
  /** How long a new version is watched after it starts to serve (0: not at all). */
  readonly probation: { readonly windowMs: number };
}

/** Default probation window: a new version is watched this long after it starts to serve. */
export const DEFAULT_PROBATION_MS = 30_000;


type Table = Record<string, unknown>;

/** Finds the line of `section.key` (or of `[section]`) in TOML source, for messages. */
class Lines {
  readonly #entries: { table: string; index: number; key: string | null; line: number }[] = [];

  constructor(text: string) {
    let table = '';
    const counts = new Map<string, number>();
    for (const [i, raw] of text.split('\n').entries()) {
      const line = raw.trim();
      const header = /^\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]|^\[\s*([A-Za-z0-9_.-]+)\s*\]/.exec(line);
      if (header) {
        table = header[1] ?? header[2] ?? '';
        const n = header[1] ? (counts.get(table) ?? -1) + 1 : 0;
        counts.set(table, n);
        this.#entries.push({ table, index: n, key: null, line: i + 1 });
        continue;
      }
      const key = /^("?)([A-Za-z0-9_-]+)\1\s*=/.exec(line);
      if (key?.[2]) this.#entries.push({ table, index: counts.get(table) ?? 0, key: key[2], line: i + 1 });
    }
  }

  find(table: string, index: number, key: string | null): number | null {
    const hit = this.#entries.find((e) => e.table === table && e.index === index && e.key === key);
    if (hit) return hit.line;
    if (key === null) return null;
    // A key that is itself a table: its header.
    const header = this.#entries.find((e) => e.key === null && e.table === (table ? `${table}.${key}` : key));
    return header ? header.line : this.find(table, index, null);
  }
}

function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) (d[0] as number[])[j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i] as number[];
      const up = d[i - 1] as number[];
      row[j] = Math.min((up[j] as number) + 1, (row[j - 1] as number) + 1, (up[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}

/** Reads values of one table, turning every problem into a located ConfigError. */
class Reader {
  readonly #file: string;
  readonly #lines: Lines;
  readonly #table: Table;
  readonly #name: string;
  readonly #index: number;
  readonly #label: string;
  readonly #seen = new Set<string>();

  constructor(file: string, lines: Lines, table: Table, name: string, index = 0, label = name ? `[${name}]` : 'top level') {
    this.#file = file;
    this.#lines = lines;
    this.#table = table;
    this.#name = name;
    this.#index = index;
    this.#label = label;
  }

  fail(key: string | null, message: string): never {
    const line = this.#lines.find(this.#name, this.#index, key);
    throw new ConfigError(`${this.#file}${line ? `:${line}` : ''}: ${this.#label}${key ? ` ${key}` : ''}: ${message}`);
  }

  #get(key: string): unknown {
    this.#seen.add(key);
    return Object.prototype.hasOwnProperty.call(this.#table, key) ? this.#table[key] : undefined;
  }

  has(key: string): boolean {
    return this.#get(key) !== undefined;
  }

  /** A required key is missing: point at a misspelling of it if there is one. */
  missing(key: string, expected: string): never {
    const typo = Object.keys(this.#table).find((k) => k !== key && distance(k, key) <= 2);
    if (typo !== undefined) this.fail(typo, `unknown key; did you mean "${key}"?`);
    this.fail(key, `is required: expected ${expected}`);
  }

  string(key: string, fallback?: string): string {
    const v = this.#get(key);
    if (v === undefined) {
      if (fallback !== undefined) return fallback;
      this.missing(key, 'a string');
    }
    if (typeof v !== 'string' || v === '') this.fail(key, `expected a non-empty string, got ${JSON.stringify(v)}`);
    return v;
  }

  optionalString(key: string): string | null {
    return this.#get(key) === undefined ? null : this.string(key);
  }

  int(key: string, fallback: number, min: number, max: number, unit = ''): number {
    const v = this.#get(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'number' && typeof v !== 'bigint') this.fail(key, `expected an integer${unit} from ${min} to ${max}, got ${JSON.stringify(v)}`);
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) this.fail(key, `expected an integer${unit} from ${min} to ${max}, got ${String(v)}`);
    return n;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.#get(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') this.fail(key, `expected true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  oneOf<T extends string>(key: string, values: readonly T[], fallback: T): T {
    const v = this.#get(key);
    if (v === undefined) return fallback;
    if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) this.fail(key, `expected one of ${values.map((x) => JSON.stringify(x)).join(', ')}, got ${JSON.stringify(v)}`);
    return v as T;
  }

  strings(key: string): string[] {
    const v = this.#get(key);
    if (v === undefined) return [];
    if (!Array.isArray(v) || !v.every((x): x is string => typeof x === 'string')) this.fail(key, `expected an array of strings, got ${JSON.stringify(v)}`);
    return v;
  }

  stringTable(key: string): Record<string, string> {
    const v = this.#get(key);
    if (v === undefined) return {};
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(key, `expected a table of strings, e.g. ${key} = { NAME = "value" }`);
    const out: Record<string, string> = {};
    for (const [k, x] of Object.entries(v)) {
      if (typeof x !== 'string') this.fail(key, `${k}: expected a string, got ${JSON.stringify(x)}`);
      out[k] = x;
    }
    return out;
  }

  /** Rejects keys that no reader asked for. */
  done(): void {
    for (const key of Object.keys(this.#table)) {
      if (this.#seen.has(key)) continue;
      const near = [...this.#seen].map((k) => [k, distance(k, key)] as const).sort((a, b) => a[1] - b[1])[0];
      this.fail(key, `unknown key${near && near[1] <= 2 ? `; did you mean "${near[0]}"?` : `; known keys: ${[...this.#seen].join(', ')}`}`);
    }
  }
}

const DEFAULT_TIMEOUTS = { drainGraceMs: 1_000, drainMs: 30_000, sealMs: 30_000, readyMs: 30_000, totalMs: 120_000, livenessMs: 3_000, heartbeatMs: 500, helloMs: 10_000, stopGraceMs: 2_000, shutdownMs: 30_000 };

function table(r: Reader, parent: Table, key: string): Table {
  const v = parent[key];
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) r.fail(key, 'expected a table');
  return v as Table;
}

function absolute(base: string, path: string): string {
  return isAbsolute(path) ? path : resolve(base, path);
}

/** Parses and validates TOML text; `file` is used in messages and to resolve relative paths. */
export function parseConfig(text: string, file: string): Config {
  let doc: Table;
  try {
    doc = parse(text);
  } catch (error) {
    if (error instanceof TomlError) {
      throw new ConfigError(`${file}:${error.line}:${error.column}: not valid TOML: ${error.message.split('\n')[0] ?? ''}`);
    }
    throw new ConfigError(`${file}: not valid TOML: ${(error as Error).message}`);
  }
  const lines = new Lines(text);
  const base = dirname(resolve(file));
  const top: Reader = new Reader(file, lines, doc, '');
  const section = (name: string): Reader => new Reader(file, lines, table(top, doc, name), name);
  for (const name of ['daemon', 'listeners', 'sockets', 'supervisor', 'timeouts', 'restart', 'hooks', 'health', 'probation']) top.has(name);
  top.done();

  const d: Reader = section('daemon');
  if (!top.has('daemon')) top.fail(null, 'a [daemon] table is required, with at least command (and data_dir for a daemon that keeps data)');
  const daemon = {
    command: d.string('command'),
    args: d.strings('args'),
    env: d.stringTable('env'),
    // Relative paths (and a missing cwd) are the configuration file's directory's.
    cwd: absolute(base, d.optionalString('cwd') ?? '.'),
    // Absent: the daemon keeps no data directory; its handoffs overlap (PROTOCOL.md section 7).
    dataDir: d.has('data_dir') ? absolute(base, d.string('data_dir')) : null,
    // A successor runs this many nice steps lower until Begin (when the supervisor may restore it).
    successorNice: d.int('successor_nice', 10, 0, 19),
    // Idle connections move to the successor at a handoff, with daemons that can (PROTOCOL.md section 6).
    moveConnections: d.bool('move_connections', true),
  };
  d.done();

  const rawListeners = doc.listeners;
  if (!Array.isArray(rawListeners) || rawListeners.length === 0) top.fail(null, 'at least one [[listeners]] table is required, e.g. name = "http", address = "127.0.0.1:8080"');
  const names = new Set<string>();
  const listeners = (rawListeners as unknown[]).map((raw, i): ListenerConfig => {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) top.fail('listeners', 'expected [[listeners]] tables');
    const l: Reader = new Reader(file, lines, raw as Table, 'listeners', i, `[[listeners]] #${i + 1}`);
    const name = l.string('name');
    if (!/^[A-Za-z0-9_-]+$/.test(name)) l.fail('name', `expected letters, digits, "_" or "-", got ${JSON.stringify(name)}`);
    if (names.has(name)) l.fail('name', `"${name}" is used by another listener; names must be unique`);
    names.add(name);
    const backlog = l.int('backlog', 511, 1, 65_535);
    if (l.has('address') === l.has('path')) l.fail(null, 'give exactly one of address = "host:port" (TCP) or path = "/run/x.sock" (Unix)');
    if (l.has('path')) {
      const path = absolute(base, l.string('path'));
      const modeText = l.has('mode') ? l.string('mode') : '0660';
      if (!/^0?[0-7]{3}$/.test(modeText)) l.fail('mode', `expected an octal file mode such as "0660", got ${JSON.stringify(modeText)}`);
      l.done();
      return { name, path, mode: parseInt(modeText, 8), backlog };
    }
    const address = l.string('address');
    const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(address) ?? /^([0-9.]+):(\d+)$/.exec(address);
    const host = m?.[1] ?? '';
    const port = Number(m?.[2] ?? -1);
    if (!m || isIP(host) === 0 || port < 0 || port > 65_535) {
      l.fail('address', `expected "host:port" with an IP address ("127.0.0.1:8080", "[::1]:8080"), got ${JSON.stringify(address)}`);
    }
    if (l.has('mode')) l.fail('mode', 'applies to Unix socket listeners (path = ...) only');
    l.done();
    return { name, host, port, backlog };
  });

  const so: Reader = section('sockets');
  const runtimeDir = so.has('runtime_dir') ? absolute(base, so.string('runtime_dir')) : null;
  const inRuntime = (key: string, fallback: string): string => {
    if (so.has(key)) return absolute(base, so.string(key));
    if (!runtimeDir) so.fail(key, `is required unless [sockets] runtime_dir is set (then it defaults to <runtime_dir>/${fallback})`);
    return join(runtimeDir, fallback);
  };
  const controlSocket = inRuntime('control', 'control.sock');
  const triggerSocket = inRuntime('trigger', 'trigger.sock');
  so.done();

  const s: Reader = section('supervisor');
  const journal = s.has('journal') ? absolute(base, s.string('journal')) : daemon.dataDir === null ? join(runtimeDir ?? dirname(controlSocket), 'journal.json') : join(daemon.dataDir, '.handoff-journal.json');
  const pidFile = s.has('pid_file') ? absolute(base, s.string('pid_file')) : join(dirname(triggerSocket), 'supervisor.pid');
  const logFormat = s.oneOf('log_format', ['auto', 'json', 'pretty'] as const, 'auto');
  const logFile = s.has('log_file') ? absolute(base, s.string('log_file')) : null;
  let metrics: Config['metrics'] = null;
  if (s.has('metrics')) {
    const text = s.string('metrics');
    const m = /^([0-9.]+):(\d+)$/.exec(text) ?? /^\[([0-9a-fA-F:]+)\]:(\d+)$/.exec(text);
    if (!m || isIP(m[1] ?? '') === 0 || Number(m[2]) > 65_535) s.fail('metrics', `expected "host:port" to serve Prometheus metrics on, got ${JSON.stringify(text)}`);
    metrics = { host: m[1] ?? '', port: Number(m[2]) };
  }
  s.done();

  const t: Reader = section('timeouts');
  const ms = (key: string, fallback: number): number => t.int(key, fallback, 1, 86_400_000, ' number of milliseconds');
  const timeouts = {
    drainGraceMs: ms('drain_grace', DEFAULT_TIMEOUTS.drainGraceMs),
    drainMs: ms('drain', DEFAULT_TIMEOUTS.drainMs),
    sealMs: ms('seal', DEFAULT_TIMEOUTS.sealMs),
    readyMs: ms('ready', DEFAULT_TIMEOUTS.readyMs),
    totalMs: ms('total', DEFAULT_TIMEOUTS.totalMs),
    livenessMs: ms('liveness', DEFAULT_TIMEOUTS.livenessMs),
    heartbeatMs: ms('heartbeat', DEFAULT_TIMEOUTS.heartbeatMs),
    helloMs: ms('hello', DEFAULT_TIMEOUTS.helloMs),
    stopGraceMs: ms('stop_grace', DEFAULT_TIMEOUTS.stopGraceMs),
    shutdownMs: ms('shutdown', DEFAULT_TIMEOUTS.shutdownMs),
  };
  if (timeouts.heartbeatMs >= timeouts.livenessMs) t.fail('heartbeat', `must be shorter than liveness (${timeouts.livenessMs} ms), or a live peer is taken for dead`);
  if (timeouts.drainGraceMs > timeouts.drainMs) t.fail('drain_grace', `must not exceed drain (${timeouts.drainMs} ms)`);
  t.done();

  const r: Reader = section('restart');
  const restart = {
    policy: r.oneOf('policy', ['on-failure', 'never'] as const, 'on-failure'),
    initialDelayMs: r.int('initial_delay', 100, 1, 3_600_000, ' number of milliseconds'),
    maxDelayMs: r.int('max_delay', 5_000, 1, 3_600_000, ' number of milliseconds'),
    maxFailures: r.int('max_failures', 5, 0, 1_000),
    windowMs: r.int('window', 60_000, 1, 86_400_000, ' number of milliseconds'),
  };
  r.done();

  const h: Reader = section('hooks');
  // A hook is one argument of /bin/sh -c, and Linux limits one argument to 128 KiB (MAX_ARG_STRLEN).
  const hookMaxBytes = 64 * 1024;
  const hook = (key: string): string | null => {
    const command = h.optionalString(key);
    const bytes = command === null ? 0 : Buffer.byteLength(command);
    if (bytes > hookMaxBytes) h.fail(key, `the command is ${bytes} bytes, more than the ${hookMaxBytes} a hook may have (the system limits one argument to 128 KiB); put the script in a file and run that, e.g. ${key} = "/bin/sh /path/to/${key}.sh"`);
    return command;
  };
  const hooks = {
    preStart: hook('pre_start'),
    postStop: hook('post_stop'),
    preHandoff: hook('pre_handoff'),
    preHandoffTimeoutMs: h.int('pre_handoff_timeout', 120_000, 1, 3_600_000, ' number of milliseconds'),
  };
  h.done();

  let health: Config['health'] = null;
  if (top.has('health')) {
    const p: Reader = section('health');
    if (p.has('url') === p.has('command')) p.fail(null, 'give exactly one of url = "http://127.0.0.1:8080/health" (an HTTP GET) or command = "..." (a shell command that exits 0 when healthy)');
    const url = p.optionalString('url');
    if (url !== null && !/^http:\/\/(127\.\d+\.\d+\.\d+|\[::1\]|localhost)(:\d+)?\//.test(url)) p.fail('url', `expected an http:// URL on loopback, got ${JSON.stringify(url)}`);
    const expectStatus = p.has('expect_status') ? p.int('expect_status', 200, 100, 599) : null;
    if (expectStatus !== null && url === null) p.fail('expect_status', 'applies to url = ... only');
    health = {
      url,
      command: p.optionalString('command'),
      expectStatus,
      timeoutMs: p.int('timeout', 2_000, 1, 60_000, ' number of milliseconds'),
      intervalMs: p.int('interval', 1_000, 10, 3_600_000, ' number of milliseconds'),
      failures: p.int('failures', 3, 1, 1_000),
    };
    p.done();
  }

  const pr: Reader = section('probation');
  const probation = { windowMs: pr.int('window', DEFAULT_PROBATION_MS, 0, 86_400_000, ' number of milliseconds') };
  const minimum = probationMinimum(health);
  if (probation.windowMs > 0 && probation.windowMs < minimum) {
    pr.fail('window', `${probation.windowMs} ms is shorter than [health] interval × failures (${minimum} ms): a failing version could pass its probation before the check could fail it; make it at least ${minimum}, or 0 for no probation`);
  }
  pr.done();
  return { source: file, daemon, listeners, controlSocket, triggerSocket, journal, pidFile, logFormat, logFile, metrics, timeouts, restart, hooks, health, probation };
}

/** The shortest probation window in which the health check can fail a version (0 without one). */
export function probationMinimum(health: Config['health']): number {
  return health ? health.intervalMs * health.failures : 0;
}

/** The configuration file's directory: where relative paths, hooks and health commands resolve and run. */
export function configDir(config: Pick<Config, 'source'>): string {
  return dirname(resolve(config.source));
}

/**
 * The trigger socket a configuration names, also when the file no longer validates (an edit
 * in progress must not keep `handoffctl` from the running supervisor): `problem` is then why
 * the file is invalid.
 * @throws ConfigError when the file cannot be read, is not TOML, or names no trigger socket.
 */
export function triggerSocketOf(file: string): { readonly socket: string; readonly problem: string | null } {
  try {
    return { socket: loadConfig(file).triggerSocket, problem: null };
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    let sockets: unknown;
    try {
      sockets = (parse(readFileSync(file, 'utf8')) as Table).sockets;
    } catch {
      throw error;
    }
    const s = (typeof sockets === 'object' && sockets !== null ? sockets : {}) as Record<string, unknown>;
    const base = dirname(resolve(file));
    if (typeof s.trigger === 'string' && s.trigger !== '') return { socket: absolute(base, s.trigger), problem: error.message };
    if (typeof s.runtime_dir === 'string' && s.runtime_dir !== '') return { socket: join(absolute(base, s.runtime_dir), 'trigger.sock'), problem: error.message };
    throw error;
  }
}

/** Reads and validates a configuration file. */
export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`${file}: cannot read the configuration (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); check the path given to --config`);
  }
  // (Messages name the file as given; the supervisor reports and re-reads it by its full path.)
  return { ...parseConfig(text, file), source: resolve(file) };
}

/**
 * The embedded default: the example key-value daemon on 127.0.0.1:`port` (8080), data in a
 * new temporary directory, sockets in a new private (0700) directory. The configuration is
 * also written there (`handoff.toml`), so that the supervisors the keeper starts, and
 * `handoffctl --config`, find the same directories.
 */
export function defaultConfig(port = 8080): Config {
  const dataDir = mkdtempSync(join(tmpdir(), 'handoff-kv-data-'));
  const runtime = mkdtempSync(join(tmpdir(), 'handoff-run-'));
  const kvMain = join(dirname(createRequire(import.meta.url).resolve('@handoff/example-kv/package.json')), 'dist', 'main.js');
  const text = `
[daemon]
command = ${JSON.stringify(process.execPath)}
args = [${JSON.stringify(kvMain)}]
env = { KV_BUILD_ID = "kv-1" }
data_dir = ${JSON.stringify(dataDir)}

[[listeners]]
name = "http"
address = "127.0.0.1:${port}"

[sockets]
runtime_dir = ${JSON.stringify(runtime)}
`;
  const file = join(runtime, 'handoff.toml');
  writeFileSync(file, text, { mode: 0o600 });
  return parseConfig(text, file);
}
