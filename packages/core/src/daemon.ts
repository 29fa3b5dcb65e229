/**
 * The high-level API for the common case: an HTTP daemon, with a data directory or without
 * one (then without a lock, and its handoffs overlap: PROTOCOL.md §7, "Overlap"). It detects
 * its role, takes the data-directory lock, opens the data, serves on the inherited (or its
 * own) listeners, serves supervisor sessions, drains with {@link HttpDrainer}, seals,
 * resumes after an aborted handoff, and as a successor takes over and checks that its
 * data continues the sealed data before it listens.
 *
 * A successor can also preload its data before it says Hello — read-only, without the lock,
 * while the incumbent still serves — and after Begin only catch up with what the incumbent
 * wrote since, so that the time nobody accepts does not grow with the data (`preload`,
 * `catchUp`, `warmUp`; PROTOCOL.md §7, "Preloading and warming up").
 *
 * Long-lived work (jobs, streams, sessions) is tracked with a {@link WorkTracker} given as
 * `work`: the drain waits for it up to its deadline, tells each item, cancels interruptible
 * items first, cuts what still runs, and reports it (`onDrainStart`, `onDrainEnd`, DrainProgress).
 * What `seal` returns, with the list of cut work, is handed to the successor's `open` or
 * `catchUp` as `handedOver` (PROTOCOL.md §6, "Long-lived work" and "Handover state").
 *
 * While a hook runs, the event loop is watched: a hook that blocks it for longer than a
 * third of the liveness timeout gets one line on stderr (see loop-watch.ts).
 *
 * `runDaemon` resolves when the process should exit, with the code to exit with.
 */
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage, RequestListener, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { SealReport } from '@handoff/protocol';
import { DEFAULT_TIMEOUTS, FieldLimits, explainRevisionGap } from '@handoff/protocol';
import { detectRole } from './env.js';
import type { DetectedRole } from './env.js';
import { CoreError, CoreErrorCode } from './errors.js';
import { messageOf } from '@handoff/protocol/internal';
import { HttpDrainer } from './http-drain.js';
import { Incumbent, defaultCapabilities } from './incumbent.js';
import type { DrainReport, Drainable, IncumbentExit } from './incumbent.js';
import type { InheritedListeners } from './listeners.js';
import { DataDirLock } from './lock.js';
import { Successor } from './successor.js';
import { canMoveConnections } from './moving.js';
import type { AdoptedConnection, ConnectionOffers, MovableConnections } from './moving.js';
import { crashPoint } from './crash-points.js';
import { armFailureFile, disarmFailureFile } from './failure-file.js';
import { watchLoop } from './loop-watch.js';
import { clipText, reloaderFor } from './reload.js';
import type { ConfigReloader, DaemonPlugins } from './reload.js';
import { decodeHandover, encodeHandover } from './handover.js';
import type { HandedOver } from './handover.js';
import type { CutWork, WorkDrainReport, WorkSnapshot, WorkTracker } from './work.js';
import type { DrainContext, DrainProgressReport } from './incumbent.js';

// A daemon started by a supervisor keeps its last output from the moment this library is
// loaded, so that a failure before it serves can be shown with the handoff's outcome.
armFailureFile();

/** Where to listen when the listener was not inherited (a run without a supervisor). */
export type ListenAddress = { readonly port: number; readonly host?: string } | { readonly path: string };

/** What `open` is told. */
export interface OpenContext {
  readonly dataDir: string;
  /** The incumbent's seal report when taking over; null on a cold start or a recovery. */
  readonly seal: SealReport | null;
  /** Why the data is being opened. */
  readonly reason: 'coldStart' | 'takeover' | 'recover' | 'resume';
  /**
   * On a takeover: what the incumbent handed over — the value its `seal` returned and the
   * work its drain cut (to offer to resume it). Null when there is none: a cold start, a
   * recovery, a resume, an incumbent that returned nothing and cut nothing, or a state that
   * could not be read (one line on stderr says why). Never rely on it for data: it is lost when
   * the incumbent dies (PROTOCOL.md §6, "Handover state").
   */
  readonly handedOver: HandedOver | null;
}

/** Why a drain runs: a handoff (PrepareHandoff) or a stop (`stopSignal`, SIGTERM). */
export type DrainCause = 'handoff' | 'stop';

/** What `onDrainStart` is told. */
export interface DrainStartInfo {
  readonly cause: DrainCause;
  /** When the drain must be over, epoch ms; tracked work still running shortly before is cut. */
  readonly deadline: number;
  /** The tracked work pending as the drain starts. */
  readonly pending: readonly WorkSnapshot[];
  /** The operator asked not to wait (`--no-drain-wait`): every tracked item is cut at once. */
  readonly cutWork: boolean;
  /**
   * Idle connections move to the successor in this drain (a handoff with `MoveConnections`):
   * declared movable connections are kept open; otherwise they are cut at the drain's end,
   * and a daemon may close them itself first (a WebSocket with 1012, "service restart").
   */
  readonly movingConnections: boolean;
}

/** What `onDrainEnd` is told. */
export interface DrainEndInfo {
  readonly cause: DrainCause;
  /** Tracked items that ended by themselves during the drain. */
  readonly finished: number;
  /** Tracked items the drain cut (interrupted, at the deadline, or at once when forced). */
  readonly cut: readonly CutWork[];
  readonly durationMs: number;
  /**
   * The handoff was abandoned mid-drain (it rolls back): this version serves on, and `cut`
   * is what it should resume itself.
   */
  readonly abandoned: boolean;
}

/** What `preload` is told. */
export interface PreloadContext {
  readonly dataDir: string;
  /**
   * Aborted when the preload's time is up (`preloadMs`): stop soon and return what was
   * loaded so far, as long as `catchUp` can finish it (say, data up to a byte offset), or
   * throw (then `open` is used after Begin).
   */
  readonly signal: AbortSignal;
}

/** How long a successor may preload, from its process's start: 70% of the supervisor's default `helloMs`. */
export const DEFAULT_PRELOAD_MS = Math.round(DEFAULT_TIMEOUTS.helloMs * 0.7);
/** How often a draining incumbent reports what it still waits for (PROTOCOL.md §6 asks for at least every 5 s). */
const DRAIN_PROGRESS_MS = 1_000;
/** How long a preload may run on after its signal before the successor says Hello without it. */
const PRELOAD_GRACE_MS = 1_000;

/**
 * Options of {@link runDaemon}. `S` is the open data; `P`, what `preload` hands to `catchUp`
 * (only for a daemon that preloads).
 */
export interface DaemonOptions<S, P = unknown> {
  readonly buildId: string;
  /**
   * The data directory to lock and open. Default: `HANDOFF_DATA_DIR`, which the supervisor
   * sets from its `[daemon] data_dir`, so that the path is configured once.
   */
  readonly dataDir?: string;
  /** Default: `HANDOFF_CONTROL_SOCKET`, else `<dataDir>/.handoff.sock`. */
  readonly controlSocket?: string;
  /** Listener names, with the address to bind when the supervisor did not pass them. */
  readonly listeners: Readonly<Record<string, ListenAddress>>;
  /**
   * Opens the data, with the lock held: a cold start, a recovery, a resume after an abort, and
   * a takeover without `preload`. Without `open` (and `revisions`, `seal`) the daemon keeps no
   * data directory: it takes no lock, and its handoffs overlap — the successor accepts before
   * the incumbent stops (PROTOCOL.md section 7, "Overlap"; the supervisor has no data_dir).
   */
  open?(context: OpenContext): Promise<S>;
  /**
   * A successor's head start, called before it says Hello (so before the supervisor asks the
   * incumbent to drain), while the incumbent still holds the lock, writes and serves: read
   * the data read-only — never write, never create or truncate a file, never take the lock.
   * The successor's Hello must come within the supervisor's `helloMs` (`[timeouts] hello`,
   * 10 s by default) from its spawn, or the handoff is abandoned: `context.signal` aborts
   * `preloadMs` after the process started — return what was loaded so far then — and a
   * preload still running a second later is left behind (the successor says Hello and
   * uses `open` after Begin). Its result goes to `catchUp`. If it throws, one line goes to
   * stderr and `open` is used after Begin: a failed preload never fails the handoff.
   * Requires `catchUp`.
   */
  preload?(context: PreloadContext): Promise<P>;
  /**
   * How long `preload` may run, in ms from the process's start. Default: 70% of the
   * supervisor's `helloMs` (`HANDOFF_HELLO_MS`; {@link DEFAULT_PRELOAD_MS}, 7 s, when it is
   * not given), so that raising `[timeouts] hello` raises it too.
   */
  readonly preloadMs?: number;
  /**
   * Called instead of `open` when taking over from a sealed incumbent after a successful
   * `preload`, with the lock held: bring the preloaded state up to date with what the
   * incumbent wrote since (and check that it is the same data; reload in full otherwise).
   * Its revisions must continue the seal, as `open`'s.
   */
  catchUp?(preloaded: P, context: OpenContext): Promise<S>;
  /**
   * Called by a successor before its Hello, after `preload`: warm up its own hot paths
   * (exercise a handler, the JSON paths). Keep it short: it counts against `helloMs` too
   * (it is skipped when `preloadMs` has passed). If it throws, one line goes to stderr and
   * the handoff goes on.
   */
  warmUp?(): Promise<void>;
  /** Last revision per shard (required with `open`). */
  revisions?(state: S): readonly number[];
  fingerprint?(state: S): string;
  /**
   * Flushes, fsyncs and closes the writer; the lock is released right after (required with
   * `open`). What it returns (anything msgpack encodes: a poll offset, session ids, counters),
   * if not undefined, is handed to the successor's `open`/`catchUp` as `handedOver.state`; at
   * most 512 KiB encoded, with the cut work — more, or a value that does not encode, fails the
   * seal with one line saying so, and this incumbent serves on.
   */
  seal?(state: S): Promise<unknown>;
  /** The request handler of a listener. */
  handler(state: S, listener: string): RequestListener;
  /**
   * Handles an HTTP upgrade on a listener (a WebSocket handshake: e.g. `ws`'s
   * `handleUpgrade`). Without it, upgrade requests are refused (the connection is closed).
   */
  upgrade?(state: S, listener: string): (request: IncomingMessage, socket: Socket, head: Buffer) => void;
  /** Called each time the daemon (re)starts serving. */
  onServing?(info: { readonly role: 'cold' | 'successor'; readonly promoted: boolean; readonly listeningOn: readonly string[] }): void;
  /**
   * The daemon's long-lived work (jobs, streams, sessions, children): the drain waits for what
   * it tracks, up to the drain's deadline, tells each item, cancels interruptible ones first
   * and cuts what still runs then (PROTOCOL.md §6, "Long-lived work").
   */
  readonly work?: WorkTracker;
  /**
   * Called when a drain starts (a handoff or a stop), e.g. to tell the daemon's users. Not
   * awaited: the drain never waits for it; a throw or a rejection is one line on stderr.
   */
  onDrainStart?(info: DrainStartInfo): void | Promise<void>;
  /**
   * Called when the drain of tracked work is over — also when a rollback abandoned it — with
   * what it cut. Not awaited; a throw or a rejection is one line on stderr.
   */
  onDrainEnd?(info: DrainEndInfo): void | Promise<void>;
  /**
   * Long-lived connections the daemon declares movable (WebSocket sessions, raw protocols):
   * at a handoff each moves to the successor when idle, and the successor's `adopt` serves it
   * (PROTOCOL.md section 6, "Moving connections"). A daemon without data that gives it hands
   * off in the drain-first order (its connections move) instead of by overlap.
   */
  readonly connections?: MovableConnections;
  /**
   * Move idle connections to the successor at a handoff: keep-alive HTTP connections between
   * requests and `connections`, where the supervisor can pass descriptors (it spawned this
   * process; `[daemon] move_connections`). Default true; false: they drain, as before.
   */
  readonly moveConnections?: boolean;
  /** Aborting it stops the daemon gracefully: drain, seal, release, exit 0. */
  readonly stopSignal?: AbortSignal;
  /** The drain grace when stopping on `stopSignal` (default 1 s); in a handoff the supervisor's `drain_grace` applies. */
  readonly drainGraceMs?: number;
  readonly heartbeatMs?: number;
  readonly livenessMs?: number;
  /** How long to wait for the lock at start or takeover. Default 10 s. */
  readonly lockWaitMs?: number;
  /**
   * Plugins the supervisor can reload in place (`handoffctl reload <plugin>`, PROTOCOL.md
   * section 6, "Reload"): a `ReloadManager` of `@handoff/reload`. A successor loads them from
   * their files at its own start, like the rest of its code.
   */
  readonly plugins?: DaemonPlugins;
  /**
   * Re-reads and applies the daemon's own configuration in place (`handoffctl reload
   * --daemon-config`); throwing keeps the current one and reports why. With `plugins` or
   * this hook the daemon announces the Reload capability.
   */
  readonly reloadConfig?: ConfigReloader;
}

/** A listening HTTP server and its drainer. */
interface Served {
  readonly name: string;
  readonly server: Server;
  readonly drainer: HttpDrainer;
}

function describeAddress(server: Server): string {
  const a = server.address();
  if (a === null) return 'unknown';
  if (typeof a === 'string') return `unix:${a}`;
  return a.family === 'IPv6' ? `tcp:[${a.address}]:${a.port}` : `tcp:${a.address}:${a.port}`;
}

/**
 * Runs a handoff-ready HTTP daemon until it should exit. Never calls process.exit. A start
 * that cannot be made — a malformed spawn contract or an unusable inherited listener (exit
 * code 2), the lock held by another process (exit code 1) — resolves with the reason, too.
 */
export async function runDaemon<S, P = unknown>(options: DaemonOptions<S, P>, given?: DetectedRole): Promise<IncumbentExit> {
  let detected: DetectedRole;
  try {
    detected = given ?? detectRole();
  } catch (error) {
    if (error instanceof CoreError) return { code: 2, reason: error.message };
    throw error;
  }
  if (options.preload && !options.catchUp) return { code: 2, reason: 'runDaemon: preload is given without catchUp, which brings the preloaded data up to date after Begin: give both or neither' };
  const openData = options.open?.bind(options);
  const revisionsOf = options.revisions?.bind(options);
  const sealData = options.seal?.bind(options);
  const stateless = !openData;
  if (stateless && (revisionsOf || sealData || options.preload || options.dataDir !== undefined)) {
    return { code: 2, reason: 'runDaemon: revisions, seal, preload or dataDir is given without open; give open (a daemon with data) or none of them (a daemon without a data directory)' };
  }
  if (!stateless && (!revisionsOf || !sealData)) return { code: 2, reason: 'runDaemon: open is given without revisions and seal; a daemon with data needs all three' };
  // A daemon without data needs no directory (and ignores HANDOFF_DATA_DIR).
  const dataDir = stateless ? '' : (options.dataDir ?? detected.dataDir ?? '');
  if (!stateless && !dataDir) return { code: 2, reason: 'no data directory: run under handoff-supervisor (it passes [daemon] data_dir as HANDOFF_DATA_DIR) or give runDaemon a dataDir' };
  const controlSocket = options.controlSocket ?? detected.controlSocket ?? (stateless ? join(tmpdir(), `handoff-${process.pid}.sock`) : `${dataDir}/.handoff.sock`);
  const inherited: InheritedListeners = detected.listeners;
  let state: S | undefined;
  let lastSeal: SealReport | null = null;
  let sealed = false;
  let served: Served[] = [];
  const heartbeatMs = options.heartbeatMs ?? detected.timing.heartbeatMs;
  const livenessMs = options.livenessMs ?? detected.timing.livenessMs;
  // A hook that blocks the event loop this long is a third of the way to being taken for dead.
  const watchOptions = { livenessMs: livenessMs ?? DEFAULT_TIMEOUTS.livenessMs, thresholdMs: (livenessMs ?? DEFAULT_TIMEOUTS.livenessMs) / 3 };
  const watched = <T>(hook: string, run: () => Promise<T>): Promise<T> => watchLoop(hook, run, watchOptions);
  const open = (context: OpenContext): Promise<S> => (openData ? watched('open()', () => openData(context)) : Promise.resolve(undefined as S));
  const revisionsNow = (current: S): number[] => (revisionsOf ? [...revisionsOf(current)] : []);
  const lockIfData = async (take: () => Promise<DataDirLock>): Promise<DataDirLock | null> => (stateless ? null : take());

  /**
   * The request handler of each listener for the data open now. A server lives as long as the
   * process (a rollback listens again on it): the connections it kept, or got back from a
   * handoff that moved them, reach the handler of the data open now.
   */
  const handlers = new Map<string, RequestListener>();
  const upgraders = new Map<string, (request: IncomingMessage, socket: Socket, head: Buffer) => void>();
  const listen = async (current: S): Promise<string[]> => {
    const previous = served;
    served = [];
    for (const [name, address] of Object.entries(options.listeners)) {
      handlers.set(name, options.handler(current, name));
      const upgrade = options.upgrade?.(current, name);
      if (upgrade) upgraders.set(name, upgrade);
      const kept = previous.find((p) => p.name === name);
      // A rollback: what the drain moved away is this drainer's again.
      kept?.drainer.resume();
      let server = kept?.server;
      if (!server) {
        server = createServer({ keepAlive: true }, (req, res) => {
          handlers.get(name)?.(req, res);
        });
        if (options.upgrade) {
          server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
            const handle = upgraders.get(name);
            if (handle) handle(req, socket, head);
            else socket.destroy();
          });
        }
      }
      const drainer = kept?.drainer ?? new HttpDrainer(server);
      const listener = inherited.get(name);
      if (listener) await listener.listen(server);
      else {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(address, () => {
            server.off('error', reject);
            resolve();
          });
        });
      }
      served.push({ name, server, drainer });
    }
    return served.map((s) => `${s.name}=${describeAddress(s.server)}`);
  };

  const requireState = (): S => {
    if (state === undefined && !stateless) throw new CoreError(CoreErrorCode.WrongState, 'the daemon has no open data');
    return state as S; // a daemon without data has none: undefined
  };

  const work = options.work;
  /** The work the last drain cut: handed over with the seal's state. */
  let lastCut: readonly CutWork[] = [];
  /** The work drain running (a stop during a handoff's drain joins it rather than start another). */
  let workDrain: Promise<WorkDrainReport> | null = null;
  /**
   * Calls a user hook around the drain. Not awaited: the drain never waits for it, so a hook
   * that hangs cannot hold up a handoff or a rollback; what it throws or rejects is one line.
   */
  const notify = (hook: string, call: (() => void | Promise<void>) | undefined): void => {
    if (!call) return;
    const failed = (error: unknown): void => {
      process.stderr.write(`handoff: ${hook} failed: ${messageOf(error)}; the drain goes on\n`);
    };
    try {
      Promise.resolve(call()).catch(failed);
    } catch (error) {
      failed(error);
    }
  };
  /** What the drain waits for now: tracked work and open connections, by kind, most first. */
  const progressNow = (deadline: number): DrainProgressReport => {
    const p = work?.progress();
    const connections = served.reduce((n, s) => n + s.drainer.openConnections, 0);
    const byKind = [...(p?.byKind ?? []).map((k) => [k.kind, k.count] as const), ...(connections > 0 ? [['connection', connections] as const] : [])]
      .sort((a, b) => b[1] - a[1])
      .slice(0, FieldLimits.workKindsMax);
    const oldest = p?.oldest ?? null;
    return {
      pending: (p?.pending ?? 0) + connections,
      // Within the wire's limits whatever the daemon named its work (bytes, not characters).
      kinds: byKind.map(([kind]) => clipText(kind, FieldLimits.workKindMax)),
      counts: byKind.map(([, count]) => count),
      oldest: oldest ? clipText(`${oldest.kind} ${oldest.id}${oldest.description ? `: ${oldest.description}` : ''}`) : '',
      oldestMs: oldest ? Math.max(0, Math.round(oldest.ageMs)) : 0,
      leftMs: Math.max(0, deadline - Date.now()),
    };
  };
  const drainAll = async (deadline: number, signal: AbortSignal, graceMs: number | undefined, cause: DrainCause, context?: DrainContext): Promise<DrainReport> => {
    const grace = graceMs ?? options.drainGraceMs ?? DEFAULT_TIMEOUTS.drainGraceMs;
    const cutWork = context?.cutWork ?? false;
    notify('onDrainStart()', options.onDrainStart ? () => options.onDrainStart?.({ cause, deadline, pending: work?.items() ?? [], cutWork, movingConnections: context?.offers !== undefined }) : undefined);
    // Progress for the operator: at once, then every second while anything is pending.
    const report = (): void => {
      const now = progressNow(deadline);
      if (now.pending > 0) context?.progress(now);
    };
    const ticker = context ? setInterval(report, DRAIN_PROGRESS_MS) : undefined;
    ticker?.unref();
    report();
    const drainWork = async (): Promise<number> => {
      if (!work) return 0;
      if (workDrain) {
        // A stop during a handoff's drain: that drain goes on to its own end; wait for it.
        await workDrain;
        return 0;
      }
      workDrain = work.drain({ deadline, force: cutWork, signal });
      const r = await workDrain.finally(() => {
        workDrain = null;
      });
      lastCut = r.cut;
      if (r.cut.length > 0) {
        const list = r.cut.map((c) => `${c.kind} ${c.id} (${c.why})`).join(', ');
        process.stderr.write(`handoff: the drain cut ${r.cut.length} tracked item${r.cut.length === 1 ? '' : 's'}: ${list.slice(0, 1_000)}\n`);
      }
      // Also for an abandoned drain (a rollback): the daemon learns what was cut, to resume it itself.
      notify('onDrainEnd()', options.onDrainEnd ? () => options.onDrainEnd?.({ cause, finished: r.finished, cut: r.cut, durationMs: r.durationMs, abandoned: r.abandoned }) : undefined);
      return r.cut.length;
    };
    const offers = context?.offers;
    // Keep-alive connections move between requests, declared ones when they say they are idle.
    const move = (s: Served) => (offers ? { move: (socket: Socket) => offers.offer(socket, { kind: 'http', listener: s.name, onReturn: () => { s.drainer.restore(socket); } }), moved: () => offers.done } : {});
    try {
      const [reports, workCut] = await watched('the drain (your request handlers)', () =>
        Promise.all([Promise.all(served.map((s) => s.drainer.drain({ deadline, graceMs: grace, signal, ...move(s) }))), drainWork(), offers ? moveDeclared(offers, deadline, signal) : undefined]),
      );
      return { openConnsRemaining: reports.reduce((n, r) => n + r.openConnsRemaining, 0), acceptClosed: true, workCut };
    } finally {
      if (ticker) clearInterval(ticker);
    }
  };
  /**
   * Offers each declared movable connection when it says it is idle, until none is left, the
   * deadline, or an abort; what is left drains with its server (cut at the deadline).
   */
  const moveDeclared = async (offers: ConnectionOffers, deadline: number, signal: AbortSignal): Promise<void> => {
    const declared = options.connections;
    if (!declared) return;
    for (;;) {
      for (const [socket, spec] of declared.pending()) {
        let idle: boolean;
        try {
          idle = spec.idle();
        } catch {
          idle = false; // a check that throws: not idle
        }
        const listener = adoptedOn.get(socket) ?? served.find((s) => (socket as { server?: unknown }).server === s.server)?.name ?? served[0]?.name ?? '';
        const onReturn = (): void => {
          declared.unmark(socket);
          for (const s of served) s.drainer.restore(socket);
        };
        if (!idle || !offers.offer(socket, { kind: spec.kind, listener, state: spec.state?.bind(spec), onReturn })) continue;
        declared.markMoved(socket);
        for (const s of served) s.drainer.release(socket);
      }
      if (declared.pending().length === 0 || signal.aborted || Date.now() >= deadline) return;
      if (Date.now() >= offers.until) {
        // The time for moving is over (the drain must end well before its deadline): what did not move is closed.
        const left = declared.pending();
        for (const [socket] of left) socket.destroy();
        process.stderr.write(`handoff: ${left.length} declared connection${left.length === 1 ? '' : 's'} did not become idle in time to move and ${left.length === 1 ? 'was' : 'were'} closed\n`);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  /** The listener each adopted connection came on (its socket has no `server`). */
  const adoptedOn = new WeakMap<Socket, string>();
  /** Serves the connections the predecessor handed over (after Commit). */
  const adoptConnections = (adopted: readonly AdoptedConnection[]): void => {
    let dropped = 0;
    for (const connection of adopted) {
      const owner = served.find((s) => s.name === connection.listener) ?? served[0];
      if (owner) adoptedOn.set(connection.socket, owner.name);
      if (connection.kind === 'http') {
        if (owner) {
          owner.server.emit('connection', connection.socket);
          if (connection.leftover.length > 0) {
            connection.socket.unshift(connection.leftover);
            owner.drainer.notFresh(connection.socket);
          }
          // Idle now: the server's keep-alive timeout applies, as to a connection it accepted.
          connection.socket.setTimeout(owner.server.keepAliveTimeout);
          connection.socket.resume();
          continue;
        }
      } else {
        try {
          if (options.connections?.adopt(connection) === true) {
            // Counted and cut at a later drain's deadline, as a connection its server accepted.
            owner?.drainer.track(connection.socket);
            continue;
          }
        } catch (error) {
          process.stderr.write(`handoff: adopting a moved ${connection.kind} connection failed: ${messageOf(error)}; it is closed\n`);
        }
      }
      dropped++;
      connection.socket.destroy();
    }
    if (dropped > 0) process.stderr.write(`handoff: ${dropped} moved connection${dropped === 1 ? '' : 's'} closed: this version serves no such kind (give runDaemon connections with an adopt function)\n`);
  };
  /** Seals the data; returns the report and what `seal` returned. */
  const sealAll = async (): Promise<{ report: SealReport; handed: unknown }> => {
    const current = requireState();
    const handed: unknown = sealData ? await watched('seal()', () => sealData(current)) : undefined;
    sealed = true;
    lastSeal = { revisions: revisionsNow(current), fingerprint: options.fingerprint?.(current) ?? '' };
    return { report: lastSeal, handed };
  };
  const drainable: Drainable = {
    drain: (deadline, signal, graceMs, context) => drainAll(deadline, signal, graceMs, 'handoff', context),
    async seal() {
      const { report, handed } = await sealAll();
      // Work started after the drain returned was cut at once: handed over with the rest.
      const late = work?.takeLateCuts() ?? [];
      if (late.length > 0) process.stderr.write(`handoff: ${late.length} tracked item${late.length === 1 ? '' : 's'} started after the drain and cut at once: ${late.map((c) => `${c.kind} ${c.id}`).join(', ').slice(0, 1_000)}\n`);
      // Encoded after the data is sealed: a state that cannot go fails the seal, and resuming re-opens the data.
      return { ...report, state: encodeHandover(handed, [...lastCut, ...late]) };
    },
    async resumeAfterAbort() {
      work?.resume();
      options.connections?.resume();
      lastCut = [];
      if (sealed) {
        state = await open({ dataDir, seal: lastSeal, reason: 'resume', handedOver: null });
        sealed = false;
      }
      const listeningOn = await listen(requireState());
      disarmFailureFile();
      options.onServing?.({ role: detected.role, promoted: false, listeningOn });
    },
  };
  const timing = { ...(heartbeatMs ? { heartbeatMs } : {}), ...(livenessMs ? { livenessMs } : {}) };
  let stopping = false;
  // A stopping daemon closes its servers: it has nothing to pass on to a listener holder.
  const listenerFds = (): { name: string; fd: number }[] => (stopping ? [] : inherited.openFds());
  // Connections move where the supervisor can pass descriptors to this process (it spawned it).
  const moving = options.moveConnections !== false && canMoveConnections(detected.fdChannel);
  // Overlap needs a graceful stop: after the commit point the old incumbent is stopped by SIGTERM.
  // A daemon whose declared connections should move hands off in the drain-first order instead.
  const overlap = stateless && options.stopSignal !== undefined && !(moving && options.connections !== undefined);
  if (stateless && !overlap && detected.role === 'successor') {
    process.stderr.write('handoff: runDaemon has no stopSignal, so this daemon without data hands off in the drain-first order: give it a stopSignal aborted on SIGTERM to hand off by overlap (PROTOCOL.md §7)\n');
  }
  const reloader = options.plugins || options.reloadConfig ? reloaderFor(options.plugins, options.reloadConfig) : undefined;
  const capabilities = defaultCapabilities({ stateless: overlap, spawnHolder: inherited.names.length > 0, reload: reloader !== undefined, moveConnections: moving });
  const incumbentOptions = { controlSocket, drainable, buildId: options.buildId, capabilities, ...(inherited.names.length > 0 ? { listenerFds } : {}), ...(reloader ? { reloader } : {}), ...timing };

  let incumbent: Incumbent;
  if (detected.role === 'cold') {
    let listeningOn: string[];
    try {
      const lock = await lockIfData(() => DataDirLock.acquireOrBreakStale(dataDir, { waitMs: options.lockWaitMs ?? 10_000 }));
      state = await open({ dataDir, seal: null, reason: 'coldStart', handedOver: null });
      listeningOn = await listen(state);
      incumbent = await Incumbent.bind({ ...incumbentOptions, lock });
    } catch (error) {
      // Nothing was served: exit saying why (the kernel frees the lock with the process).
      if (!(error instanceof CoreError)) throw error;
      for (const s of served) s.server.close();
      return { code: error.code === CoreErrorCode.EnvInvalid ? 2 : 1, reason: error.message };
    }
    disarmFailureFile();
    options.onServing?.({ role: 'cold', promoted: false, listeningOn });
  } else {
    const successor = Successor.connect({ channelFd: detected.channelFd, capabilities: defaultCapabilities({ stateless: overlap, spawnHolder: false, moveConnections: moving }), ownsData: !stateless, ...timing });
    // Before Hello: the supervisor asks the incumbent to drain only once Hello arrives.
    const preloadMs = options.preloadMs ?? (detected.timing.helloMs ? Math.round(detected.timing.helloMs * 0.7) : DEFAULT_PRELOAD_MS);
    let preloaded = await preloadBeforeHello(options, dataDir, preloadMs, watched);
    let exitWith: Promise<IncumbentExit> | undefined;
    try {
      const handshook = await successor.handshake(options.buildId);
      exitWith = handshook.exited;
      const begun = await handshook.waitForBegin();
      let lock: DataDirLock | null;
      try {
        // Without data (Overlap): nothing to lock or open; Begin means "start accepting".
        lock = await lockIfData(() => DataDirLock.acquire(dataDir, { waitMs: options.lockWaitMs ?? 10_000 }));
        if (preloaded && begun.seal && options.catchUp) {
          const catchUp = options.catchUp.bind(options);
          const { value } = preloaded;
          const context: OpenContext = { dataDir, seal: begun.seal, reason: 'takeover', handedOver: decodeHandover(begun.state) };
          state = await watched('catchUp()', () => catchUp(value, context));
          crashPoint('successor:caught-up');
        } else {
          // A recovery (the incumbent died: no seal) reads the data as it is, in full.
          preloaded = null; // not kept in memory beside the data open reads
          state = await open({ dataDir, seal: begun.seal, reason: begun.seal ? 'takeover' : 'recover', handedOver: begun.seal ? decodeHandover(begun.state) : null });
        }
      } catch (error) {
        begun.fail(messageOf(error));
        return await begun.exited;
      }
      const revisions = revisionsNow(state);
      const continues = begun.seal === null || explainRevisionGap(begun.seal.revisions, revisions) === undefined;
      // Listen only on data that continues the seal; otherwise Ready reports it and the machine exits.
      let listeningOn: string[] = [];
      try {
        if (continues) listeningOn = await listen(state);
      } catch (error) {
        if (!(error instanceof CoreError)) throw error;
        for (const s of served) s.server.close();
        begun.fail(error.message);
        return await begun.exited;
      }
      crashPoint('successor:listening');
      incumbent = await begun.announceReady({ listeningOn, healthy: true, revisions }, { ...incumbentOptions, lock });
      adoptConnections(begun.takeAdoptedConnections());
      disarmFailureFile();
      options.onServing?.({ role: 'successor', promoted: begun.promoted, listeningOn });
    } catch (error) {
      if (!(error instanceof CoreError) || !exitWith) throw error;
      // Aborted. With Overlap this successor accepted beside the incumbent: finish what it
      // accepted (the supervisor's SIGKILL comes after its stop grace) rather than reset it.
      if (overlap && served.length > 0) await drainAll(Date.now() + 1_500, new AbortController().signal, 100, 'stop').catch(() => undefined);
      for (const s of served) s.server.closeAllConnections();
      return exitWith;
    }
  }

  const stopped = new Promise<IncumbentExit>((resolve) => {
    const stop = async (): Promise<void> => {
      stopping = true;
      crashPoint('incumbent:stopping');
      try {
        await drainAll(Date.now() + 10_000, new AbortController().signal, undefined, 'stop');
        // Sealed already (a handoff's seal, its supervisor gone before the outcome): nothing more to make durable.
        if (!sealed) await sealAll();
        incumbent.lock?.release();
        resolve({ code: 0, reason: 'stopped: drained and sealed' });
      } catch (error) {
        resolve({ code: 1, reason: `stop failed: ${messageOf(error)}; writes acknowledged before the stop are durable, later ones were refused` });
      }
    };
    if (options.stopSignal?.aborted) void stop();
    options.stopSignal?.addEventListener('abort', () => void stop(), { once: true });
  });
  const exit = await Promise.race([incumbent.exited, stopped]);
  for (const s of served) s.server.closeAllConnections();
  await incumbent.close();
  return exit;
}

/**
 * A successor's work before its Hello: `preload` (read-only, without the lock), then
 * `warmUp`, within `preloadMs` of the process's start. Null when there is nothing preloaded:
 * no `preload`, or it failed or overran (one line on stderr; `open` is used after Begin).
 */
async function preloadBeforeHello<S, P>(
  options: DaemonOptions<S, P>,
  dataDir: string,
  budgetMs: number,
  watched: <T>(hook: string, run: () => Promise<T>) => Promise<T>,
): Promise<{ readonly value: P } | null> {
  const deadline = Date.now() + budgetMs - process.uptime() * 1_000;
  let preloaded: { readonly value: P } | null = null;
  if (options.preload) {
    const preload = options.preload.bind(options);
    const timeUp = new AbortController();
    const timers: NodeJS.Timeout[] = [];
    // Past the grace, the successor goes on without the preload (which only reads).
    const overran = new Promise<'overran'>((resolve) => {
      timers.push(setTimeout(() => { timeUp.abort(new Error(`preloadMs (${budgetMs} ms) has passed`)); }, Math.max(0, deadline - Date.now())));
      timers.push(setTimeout(() => { resolve('overran'); }, Math.max(0, deadline + PRELOAD_GRACE_MS - Date.now())));
    });
    try {
      const value = await watched('preload()', () => {
        const running = preload({ dataDir, signal: timeUp.signal });
        crashPoint('successor:preloading');
        return Promise.race([running.then((v) => ({ v })), overran]);
      });
      if (value === 'overran') {
        process.stderr.write(`handoff: preload() went on for more than ${PRELOAD_GRACE_MS} ms after its signal (preloadMs ${budgetMs} ms from the start); the successor says Hello without it and opens the data in full with open() after Begin\n`);
      } else {
        preloaded = { value: value.v };
      }
    } catch (error) {
      process.stderr.write(`handoff: preload() failed: ${messageOf(error)}; the data will be opened in full with open() after Begin\n`);
    } finally {
      for (const t of timers) clearTimeout(t);
    }
  }
  if (options.warmUp && Date.now() < deadline) {
    const warmUp = options.warmUp.bind(options);
    try {
      await watched('warmUp()', warmUp);
    } catch (error) {
      process.stderr.write(`handoff: warmUp() failed: ${messageOf(error)}; the handoff goes on\n`);
    }
  }
  return preloaded;
}
