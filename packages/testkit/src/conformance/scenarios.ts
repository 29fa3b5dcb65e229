/**
 * The checks of the conformance kit: each names the PROTOCOL.md section it enforces. Bare
 * checks run against the daemon started by hand (no supervisor); cluster checks against the
 * real `handoff-supervisor` binary running it, under load with a ledger of acknowledged
 * writes, each followed by {@link checkPromises}.
 */
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { basename, join } from 'node:path';
import { DataDirLock, lockKindsHeldBy } from '@handoff/core';
import { capabilities, encodeFrame, hasCapability, revisionsContinue } from '@handoff/protocol';
import type { Hello, ReloadDone, ToSupervisorMessage } from '@handoff/protocol';
import type { HandoffResult } from '@handoff/supervisor';
import { ask } from '@handoff/supervisor-cli/client';
import type { Answer } from '@handoff/supervisor-cli/client';
import { checkPromises } from '../checks.js';
import type { Cluster } from '../cluster.js';
import { LoadDriver, verifyLedger } from '../load.js';
import { waitForValue, waitUntil } from '../wait.js';
import { getJson } from '../http.js';
import { BARE_HEARTBEAT_MS, BareDaemon, ControlClient, dataDirEnv, helloProblem, procLocks } from './bare.js';
import type { Program } from './bare.js';

/** A check did not hold. */
export class CheckFailed extends Error {}
/** A check does not apply to this daemon (a knob or the reference is missing). */
export class CheckSkipped extends Error {}
/** The daemon never served on its inherited listener: bad input, not a failed check. */
export class NeverServed extends Error {}

/** Fault knobs: environment that makes the daemon misbehave on purpose (`--knob name=K=V`). */
export type KnobName = 'seal-fail' | 'stale' | 'slow-ready';
export const KNOB_NAMES: readonly KnobName[] = ['seal-fail', 'stale', 'slow-ready'];

/** What the checks share. */
export interface Context {
  readonly program: Program;
  readonly healthPath: string;
  readonly knobs: Readonly<Partial<Record<KnobName, Readonly<Record<string, string>>>>>;
  /** The reference daemon (the kv example) for the data-format checks, or why there is none. */
  readonly reference: { readonly program: (dataDir: string) => Program } | { readonly missing: string } | null;
  /** The run's temp directory. */
  readonly dir: string;
  /** Set in every process the run starts, to find and kill them. */
  readonly tag: Readonly<Record<string, string>>;
  /** The bare daemon, during the bare checks. */
  bare: BareDaemon | null;
  bareDataDir: string;
  /** The Hello the daemon sent (bare), for its capabilities. */
  hello: Hello | null;
  /** The cluster, during the cluster checks. */
  cluster: Cluster | null;
  /** Why there is no cluster, when cold start failed. */
  clusterFailure: string | null;
  /** Replaces a cluster whose promises broke, so that later checks start clean. */
  freshCluster(): Promise<Cluster>;
}

/** One check. */
export interface CheckDef {
  readonly id: string;
  readonly title: string;
  readonly section: string;
  readonly needs: 'bare' | 'cluster';
  /** Runs it; returns the detail of a pass; throws CheckFailed / CheckSkipped (any other error is a failure). */
  run(ctx: Context): Promise<string>;
}

const fail = (detail: string): never => {
  throw new CheckFailed(detail);
};
const skip = (detail: string): never => {
  throw new CheckSkipped(detail);
};

// ---- bare checks ------------------------------------------------------------------------

async function stillServes(ctx: Context, what: string): Promise<void> {
  const bare = ctx.bare ?? fail('no bare daemon');
  const health = await getJson(bare.port, ctx.healthPath);
  if (bare.exit) fail(`the daemon exited (${String(bare.exit.code ?? bare.exit.signal)}) after ${what}: ${bare.lastLine()}`);
  if (health?.pid !== bare.pid) fail(`the daemon stopped serving ${ctx.healthPath} after ${what} (answer: ${JSON.stringify(health)})`);
  const again = await ControlClient.connect(bare.controlSocket).catch((e: unknown) => fail(`after ${what}, ${(e as Error).message}`));
  try {
    const problem = helloProblem(await again.first(), 'incumbent', bare.pid);
    if (problem) fail(`after ${what}, a new control connection: ${problem}`);
  } finally {
    again.destroy();
  }
}

/** Sends `bytes` after the Hello on a fresh control connection and checks the daemon survives; `mustClose` when the spec says the connection MUST close. */
async function badFrame(ctx: Context, what: string, bytes: Uint8Array, mustClose: boolean): Promise<string> {
  const bare = ctx.bare ?? fail('no bare daemon');
  const client = await ControlClient.connect(bare.controlSocket).catch((e: unknown) => fail((e as Error).message));
  let closed: boolean;
  try {
    await client.first();
    client.write(bytes);
    closed = await client.closesWithin(mustClose ? 2_000 : 500);
  } finally {
    client.destroy();
  }
  if (mustClose && !closed) fail(`the daemon kept the connection open for 2 s after ${what} (it MUST close it: framing is lost)`);
  await stillServes(ctx, what);
  return `${what}: ${closed ? 'connection closed' : 'connection kept (the session SHOULD end)'}; the daemon serves on and greets a new session`;
}

/** A frame with `payload` as its body (version 1), no validation. */
function rawFrame(payload: Uint8Array, version = 1): Uint8Array {
  const frame = new Uint8Array(6 + payload.length);
  const view = new DataView(frame.buffer);
  view.setUint32(0, payload.length + 2);
  view.setUint16(4, version);
  frame.set(payload, 6);
  return frame;
}

/** msgpack of a map of short strings (fixmap, fixstr). */
function fixmap(entries: Readonly<Record<string, string>>): Uint8Array {
  const parts: number[] = [0x80 | Object.keys(entries).length];
  const str = (s: string): void => {
    const b = Buffer.from(s);
    parts.push(0xa0 | b.length, ...b);
  };
  for (const [k, v] of Object.entries(entries)) {
    str(k);
    str(v);
  }
  return new Uint8Array(parts);
}

/** "N bytes of state" or "no state". */
function describeState(state: Uint8Array | null): string {
  return state === null ? 'no state (nil)' : `${state.length} bytes of state`;
}

/** How many frames of each session {@link nextOf} has read. */
const consumed = new WeakMap<ControlClient, number>();

/** True when `pid` holds the data-directory lock (a kernel lock, and the pid file names it). */
function lockHeldBy(dataDir: string, pid: number): boolean {
  const probe = DataDirLock.probe(dataDir);
  return probe.held && probe.pid === pid;
}

/**
 * The next message of one of `types` on `client` after those read so far, up to `timeoutMs`,
 * letting Heartbeats (and `passing`) by; fails on anything else, an invalid frame, a closed
 * session or `daemon`'s exit, with the daemon's last line of output.
 */
async function nextOf(client: ControlClient, types: readonly string[], who: string, daemon: BareDaemon, timeoutMs: number, passing: readonly string[] = []): Promise<ToSupervisorMessage> {
  const want = types.join(' or ');
  const seen = (): string => {
    const names = client.frames.map((f) => (f.ok ? (f.message as ToSupervisorMessage).type : `invalid frame (${f.error ?? ''})`)).filter((t) => t !== 'Heartbeat');
    return `frames: ${names.join(', ') || 'none'} (Heartbeats left out); its output: ${daemon.lastLine()}`;
  };
  return waitForValue(want, () => {
    for (let i = consumed.get(client) ?? 0; i < client.frames.length; i++) {
      const f = client.frames[i] ?? fail('unreachable');
      consumed.set(client, i + 1);
      if (!f.ok) fail(`${who} sent an invalid frame: ${f.error ?? '?'}`);
      const m = f.message as ToSupervisorMessage;
      if (types.includes(m.type)) return m;
      if (m.type !== 'Heartbeat' && !passing.includes(m.type)) fail(`${who} sent ${m.type} where ${want} was due (${seen()})`);
    }
    if (daemon.exit) fail(`${who} exited (${String(daemon.exit.code ?? daemon.exit.signal)}) before ${want} (${seen()})`);
    if (client.closed) fail(`${who} closed the session before ${want} (${seen()})`);
    return undefined;
  }, timeoutMs).catch((e: unknown) => fail(e instanceof CheckFailed ? e.message : `no ${want} from ${who} within ${timeoutMs} ms (${seen()})`));
}

const BARE: CheckDef[] = [
  {
    id: 'spawn-contract',
    title: 'a cold start with an inherited listener (LISTEN_FDS, LISTEN_PID) serves GET <health> with its own pid',
    section: '§2',
    needs: 'bare',
    // The first check: a daemon that never serves is bad input (NeverServed), not a report.
    run: async (ctx) => {
      const bare = ctx.bare ?? fail('no bare daemon');
      const health = await waitForValue('the daemon to serve', async () => {
        if (bare.exit) throw new NeverServed(`the daemon exited (${String(bare.exit.code ?? bare.exit.signal)}) before it served ${ctx.healthPath}: ${bare.lastLine()}`);
        return getJson(bare.port, ctx.healthPath, 1_000);
      }, 15_000).catch((error: unknown) => {
        if (error instanceof NeverServed) throw error;
        throw new NeverServed(`the daemon did not serve GET ${ctx.healthPath} (JSON with its pid) on its inherited listener within 15 s; last output: ${bare.lastLine()}`);
      });
      if (health.pid !== bare.pid) fail(`GET ${ctx.healthPath} answered pid ${JSON.stringify(health.pid)}, not the process started (${bare.pid}): the health answer MUST hold the daemon's own pid`);
      return `pid ${bare.pid} serves ${ctx.healthPath} on the inherited listener (fd 3)`;
    },
  },
  {
    id: 'hello',
    title: 'the control socket answers each new connection with a valid incumbent Hello',
    section: '§2 §5 §6',
    needs: 'bare',
    run: async (ctx) => {
      const bare = ctx.bare ?? fail('no bare daemon');
      const deadline = Date.now() + 5_000;
      const client = await waitForValue('the control socket to accept', () => ControlClient.connect(bare.controlSocket, Math.max(1, deadline - Date.now())).catch(() => null), 5_000).catch(() =>
        fail(`nothing accepts on HANDOFF_CONTROL_SOCKET (${bare.controlSocket}) within 5 s of serving`),
      );
      try {
        const first = await client.first();
        const problem = helloProblem(first, 'incumbent', bare.pid);
        if (problem) fail(problem);
        const hello = first?.message as Hello;
        ctx.hello = hello;
        const caps = (['SealProgress', 'RecoverFromDisk', 'ReserveListeners', 'CommitToSuccessor', 'SpawnHolder', 'Overlap', 'Reload', 'DrainProgress'] as const).filter((c) => hasCapability(hello.capabilities, c));
        return `role incumbent, pid ${hello.pid}, build ${JSON.stringify(hello.buildId)}, versions ${hello.protoMin}..${hello.protoMax}, capabilities ${hello.capabilities} (${caps.join(', ') || 'none'})`;
      } finally {
        client.destroy();
      }
    },
  },
  {
    id: 'reload-answers',
    title: 'a daemon announcing Reload answers each Reload with exactly one ReloadDone (an unknown plugin: failed) and serves on',
    section: '§6',
    needs: 'bare',
    run: async (ctx) => {
      const bare = ctx.bare ?? fail('no bare daemon');
      if (!ctx.hello || !hasCapability(ctx.hello.capabilities, 'Reload')) return skip('the daemon does not announce Reload (capability bit 6)');
      const client = await ControlClient.connect(bare.controlSocket).catch((e: unknown) => fail((e as Error).message));
      try {
        const problem = helloProblem(await client.first(), 'incumbent', bare.pid);
        if (problem) fail(problem);
        client.write(encodeFrame({ type: 'HelloAck', version: 1, handoffId: null, capabilities: capabilities('Reload') }, 'toDaemon'));
        const answer = async (requestId: number, what: string): Promise<ReloadDone> => {
          const done = await waitForValue(`a ReloadDone for ${what}`, () => {
            if (client.closed) fail(`the daemon closed the control session after a Reload for ${what}`);
            return client.frames.map((f) => f.message as { type?: string; requestId?: number } | undefined).find((m) => m?.type === 'ReloadDone' && m.requestId === requestId) as ReloadDone | undefined;
          }, 10_000).catch((e: unknown) => fail(e instanceof CheckFailed ? e.message : `no ReloadDone for ${what} within 10 s (frames: ${JSON.stringify(client.frames.slice(1, 6))})`));
          return done;
        };
        client.write(encodeFrame({ type: 'Reload', requestId: 1, target: 'plugin', name: 'handoff-conformance-no-such-plugin', source: '' }, 'toDaemon'));
        const unknown = await answer(1, 'a plugin the daemon does not have');
        if (unknown.outcome !== 'failed' || unknown.error === '') fail(`a Reload of a plugin the daemon does not have answered ${JSON.stringify(unknown)}; expected outcome "failed" with the reason in error`);
        client.write(encodeFrame({ type: 'Reload', requestId: 2, target: 'config', name: '', source: '' }, 'toDaemon'));
        const config = await answer(2, 'the configuration');
        const doubled = client.frames.filter((f) => (f.message as { type?: string } | undefined)?.type === 'ReloadDone').length;
        if (doubled !== 2) fail(`the daemon sent ${doubled} ReloadDone for 2 Reloads`);
        await stillServes(ctx, 'two Reloads');
        return `unknown plugin: failed (${unknown.error.slice(0, 120)}); configuration: ${config.outcome}${config.error ? ` (${config.error.slice(0, 120)})` : ''}`;
      } finally {
        client.destroy();
      }
    },
  },
  {
    id: 'drain-cut-work',
    title: 'PrepareHandoff with cutWork true: the daemon drains and answers Drained before the deadline, sends DrainProgress only where it was agreed, resumes on ResumeAfterAbort, and serves on',
    section: '§6',
    needs: 'bare',
    run: async (ctx) => {
      const bare = ctx.bare ?? fail('no bare daemon');
      const announced = ctx.hello !== null && hasCapability(ctx.hello.capabilities, 'DrainProgress');
      const client = await ControlClient.connect(bare.controlSocket).catch((e: unknown) => fail((e as Error).message));
      try {
        const problem = helloProblem(await client.first(), 'incumbent', bare.pid);
        if (problem) fail(problem);
        // DrainProgress is not agreed on this session: the daemon must not send it, whatever it announced.
        client.write(encodeFrame({ type: 'HelloAck', version: 1, handoffId: null, capabilities: capabilities('SealProgress', 'RecoverFromDisk') }, 'toDaemon'));
        const started = Date.now();
        client.write(encodeFrame({ type: 'PrepareHandoff', handoffId: 'conformance-cut', successorPid: process.pid, deadlineMs: 5_000, drainGraceMs: 100, cutWork: true, moveConns: false }, 'toDaemon'));
        const types = (): string[] => client.frames.map((f) => (f.message as { type?: string } | undefined)?.type ?? `invalid frame (${f.error ?? ''})`);
        await waitForValue('Drained', () => {
          if (client.closed) fail(`the daemon closed the control session after PrepareHandoff with cutWork true (frames: ${types().join(', ')})`);
          return types().includes('Drained') ? true : undefined;
        }, 6_000).catch((e: unknown) => fail(e instanceof CheckFailed ? e.message : `no Drained within the 5 s deadline (frames: ${types().join(', ')})`));
        const tookMs = Date.now() - started;
        if (tookMs >= 5_000) fail(`Drained came ${tookMs} ms after PrepareHandoff, not before its deadlineMs of 5000 (PROTOCOL.md §6: cut early enough to send Drained in time)`);
        const unexpected = types().filter((t) => t !== 'Hello' && t !== 'Heartbeat' && t !== 'Drained');
        if (unexpected.length > 0) fail(`while draining on a session without DrainProgress in force the daemon sent ${unexpected.join(', ')}`);
        client.write(encodeFrame({ type: 'ResumeAfterAbort', handoffId: 'conformance-cut', reason: 'conformance check' }, 'toDaemon'));
        client.destroy();
        await stillServes(ctx, 'a drain with cutWork and ResumeAfterAbort');
        return `Drained in ${tookMs} ms; no DrainProgress on a session without it${announced ? ' (the daemon announces DrainProgress)' : ''}; resumed and serves`;
      } finally {
        client.destroy();
      }
    },
  },
  {
    id: 'handover-state',
    title: 'the daemon seals with a handover state of at most 512 KiB (or none) and releases its lock; a successor of the same program given that state in Begin answers Ready holding the lock, its data continuing the seal; after Abort it exits 0, and the incumbent resumes with its lock and serves',
    section: '§6 §7 §8',
    needs: 'bare',
    run: async (ctx) => {
      const bare = ctx.bare ?? fail('no bare daemon');
      const id = 'conformance-state';
      const client = await ControlClient.connect(bare.controlSocket).catch((e: unknown) => fail((e as Error).message));
      let successor: BareDaemon | null = null;
      // The kit plays a live supervisor (§9) on each session once the handoff involves it.
      const live = new Set<ControlClient>();
      const beat = setInterval(() => {
        const frame = encodeFrame({ type: 'Heartbeat', ts: Date.now() }, 'toDaemon');
        for (const session of live) if (!session.closed) session.write(frame);
      }, BARE_HEARTBEAT_MS);
      let sealed = false;
      try {
        const first = await client.first();
        const problem = helloProblem(first, 'incumbent', bare.pid);
        if (problem) fail(problem);
        consumed.set(client, 1);
        const hello = first?.message as Hello;
        const caps = capabilities('SealProgress', 'RecoverFromDisk') & hello.capabilities;
        client.write(encodeFrame({ type: 'HelloAck', version: 1, handoffId: null, capabilities: caps }, 'toDaemon'));
        // §7's order: the successor is started and greeted before the incumbent drains.
        successor = new BareDaemon(ctx.program, ctx.bareDataDir, join(ctx.dir, 'successor-control.sock'), ctx.tag, bare);
        const next = successor;
        const channel = next.channel ?? fail('no channel to the successor');
        const greeting = await channel.first(10_000);
        const helloFailure = greeting === null && next.exit ? `it exited (${String(next.exit.code ?? next.exit.signal)}) before its Hello` : helloProblem(greeting, 'successor', next.pid);
        if (helloFailure) fail(`the successor's channel (HANDOFF_SOCK_FD): ${helloFailure}; its output: ${next.lastLine()}`);
        consumed.set(channel, 1);
        channel.write(encodeFrame({ type: 'HelloAck', version: 1, handoffId: id, capabilities: caps & (greeting?.message as Hello).capabilities }, 'toDaemon'));
        live.add(channel);
        client.write(encodeFrame({ type: 'PrepareHandoff', handoffId: id, successorPid: next.pid, deadlineMs: 5_000, drainGraceMs: 100, cutWork: false, moveConns: false }, 'toDaemon'));
        live.add(client);
        await nextOf(client, ['Drained'], 'the incumbent', bare, 6_000);
        client.write(encodeFrame({ type: 'SealRequest', handoffId: id }, 'toDaemon'));
        const seal = await nextOf(client, ['SealComplete', 'SealFailed'], 'the incumbent', bare, 10_000, ['SealProgress']);
        if (seal.type === 'SealFailed') fail(`the daemon answered SealRequest with SealFailed: ${seal.error}`);
        if (seal.type !== 'SealComplete') return fail('unreachable');
        sealed = true;
        const state = seal.state;
        const lock = DataDirLock.probe(ctx.bareDataDir);
        if (lock.held) fail(`after SealComplete the lock on ${join(ctx.bareDataDir, '.handoff.lock')} is still held${lock.pid === null ? '' : ` (.handoff.pid: ${lock.pid})`}: SealComplete means sealed and released`);
        channel.write(encodeFrame({ type: 'Begin', handoffId: id, seal: { revisions: seal.revisions, fingerprint: seal.fingerprint }, state, conns: 0 }, 'toDaemon'));
        const ready = await nextOf(channel, ['Ready'], 'the successor', next, 15_000);
        if (ready.type !== 'Ready') return fail('unreachable');
        const given = `given the daemon's own handover state (${describeState(state)}) in Begin`;
        if (!ready.healthy) fail(`the successor ${given} answered Ready with healthy false: ${next.lastLine()}`);
        if (!revisionsContinue(seal.revisions, ready.revisions)) fail(`the successor ${given} reports revisions ${JSON.stringify(ready.revisions)}, which do not continue the sealed ${JSON.stringify(seal.revisions)}`);
        if (ready.listeningOn.length === 0) fail(`the successor ${given} listens on nothing (Ready's listeningOn is empty: it refuses the data)`);
        if (!lockHeldBy(ctx.bareDataDir, next.pid)) fail(`the successor sent Ready, but it does not hold the lock (${JSON.stringify(DataDirLock.probe(ctx.bareDataDir))})`);
        channel.write(encodeFrame({ type: 'Abort', handoffId: id, code: 'HANDOFF_CANCELLED', reason: 'conformance check: the state round trip is done' }, 'toDaemon'));
        const exit = await waitForValue('the aborted successor to exit', () => next.exit, 10_000).catch(() => fail(`the successor (pid ${next.pid}) did not exit within 10 s of Abort`));
        if (exit.code !== 0) fail(`the aborted successor exited ${String(exit.code ?? exit.signal)}, not 0: ${next.lastLine()}`);
        client.write(encodeFrame({ type: 'ResumeAfterAbort', handoffId: id, reason: 'conformance check' }, 'toDaemon'));
        sealed = false;
        await waitUntil('the incumbent to re-take its lock', () => lockHeldBy(ctx.bareDataDir, bare.pid), 10_000).catch(() => fail(`the incumbent (pid ${bare.pid}) did not re-take its lock within 10 s of ResumeAfterAbort (${bare.lastLine()})`));
        await stillServes(ctx, 'a seal, its successor aborted and ResumeAfterAbort');
        return `sealed with ${describeState(state)}; the successor (pid ${next.pid}) given it in Begin was Ready with the lock, exited 0 on Abort; the incumbent resumed with its lock and serves`;
      } finally {
        clearInterval(beat);
        if (successor) {
          successor.kill();
          await waitForValue('the successor to exit', () => successor?.exit, 5_000).catch(() => undefined);
        }
        if (sealed && !client.closed) {
          // Never leave the daemon sealed for the next checks: resume it, and give it time to re-take its lock.
          client.write(encodeFrame({ type: 'ResumeAfterAbort', handoffId: id, reason: 'conformance check failed' }, 'toDaemon'));
          await waitUntil('the incumbent to re-take its lock', () => lockHeldBy(ctx.bareDataDir, bare.pid), 5_000).catch(() => undefined);
        }
        client.destroy();
      }
    },
  },
  {
    id: 'lock-kind',
    title: '<dataDir>/.handoff.lock is held with a POSIX record lock (OFD or classic), not flock, and .handoff.pid names the holder',
    section: '§14',
    needs: 'bare',
    run: (ctx) => {
      const bare = ctx.bare ?? fail('no bare daemon');
      const probe = DataDirLock.probe(ctx.bareDataDir);
      const locks = procLocks(ctx.bareDataDir);
      const kinds = lockKindsHeldBy(bare.pid, ctx.bareDataDir) ?? [];
      if (kinds.includes('flock') || locks.some((l) => l.kind === 'FLOCK')) fail(`the daemon locks .handoff.lock with flock(2) (/proc/locks: ${JSON.stringify(locks)}), which excludes no fcntl record lock: take an fcntl record lock (F_OFD_SETLK or F_SETLK) instead`);
      if (!probe.held) fail(`nobody holds a kernel lock on ${join(ctx.bareDataDir, '.handoff.lock')} while the daemon serves (/proc/locks: ${JSON.stringify(locks)})`);
      if (!kinds.includes('ofd') && !kinds.includes('posix')) fail(`the serving daemon (pid ${bare.pid}) holds no write record lock on .handoff.lock (its locks: ${JSON.stringify(kinds)}; /proc/locks: ${JSON.stringify(locks)})`);
      if (probe.pid !== bare.pid) fail(`.handoff.pid names ${String(probe.pid)}, not the lock holder ${bare.pid}`);
      return Promise.resolve(`${kinds.join('+')} write lock held by pid ${bare.pid}; .handoff.pid names it`);
    },
  },
  {
    id: 'lock-conflict',
    title: 'a second copy on the same data directory refuses to start (exit non-zero); the first serves on',
    section: '§14',
    needs: 'bare',
    run: async (ctx) => {
      const bare = ctx.bare ?? fail('no bare daemon');
      const second = new BareDaemon(ctx.program, ctx.bareDataDir, join(ctx.dir, 'second-control.sock'), ctx.tag);
      try {
        // A cold start may retry the lock for a while (the reference daemon: 10 s) before it refuses.
        const exit = await waitForValue('the second copy to exit', () => second.exit, 15_000).catch(() => null);
        if (!exit) {
          const health = await getJson(second.port, ctx.healthPath);
          fail(`the second copy (pid ${second.pid}) did not exit within 15 s${health ? `; it serves (pid ${String(health.pid)}) on the same data directory: two writers` : ''}`);
        }
        if (exit?.code === 0) fail(`the second copy exited 0; a refusal to start is a non-zero exit (${second.lastLine()})`);
        const health = await getJson(bare.port, ctx.healthPath);
        if (health?.pid !== bare.pid) fail(`the first copy stopped serving after the second tried (answer: ${JSON.stringify(health)})`);
        const probe = DataDirLock.probe(ctx.bareDataDir);
        if (!probe.held || probe.pid !== bare.pid) fail(`after the refusal the lock is ${probe.held ? `held by ${String(probe.pid)}` : 'free'}, not held by the first copy ${bare.pid}`);
        return `the second copy exited ${String(exit?.code ?? exit?.signal)}: ${second.lastLine().slice(0, 200)}`;
      } finally {
        second.kill();
      }
    },
  },
  {
    id: 'frame-oversized',
    title: 'a frame whose length is above 1 MiB: the daemon closes the connection at once and serves on',
    section: '§3',
    needs: 'bare',
    run: (ctx) => {
      const header = new Uint8Array(6);
      new DataView(header.buffer).setUint32(0, 1_048_577);
      new DataView(header.buffer).setUint16(4, 1);
      return badFrame(ctx, 'a length of 1 048 577 (header only, no body)', header, true);
    },
  },
  {
    id: 'frame-short',
    title: 'a frame whose length is below 2: the daemon closes the connection and serves on',
    section: '§3 §12',
    needs: 'bare',
    run: (ctx) => badFrame(ctx, 'a length of 1', new Uint8Array([0, 0, 0, 1, 0]), true),
  },
  {
    id: 'payload-garbage',
    title: 'a frame whose payload is not msgpack: the daemon survives and serves on',
    section: '§4 §12',
    needs: 'bare',
    run: (ctx) => badFrame(ctx, 'a payload of 0xc1 (never used in msgpack)', rawFrame(new Uint8Array([0xc1, 0xc1, 0xc1])), false),
  },
  {
    id: 'wrong-direction',
    title: 'a valid message of the wrong direction (a Hello sent to the daemon): the daemon survives and serves on',
    section: '§6 §12',
    needs: 'bare',
    run: (ctx) =>
      badFrame(ctx, 'a Hello sent to the daemon', encodeFrame({ type: 'Hello', role: 'incumbent', pid: process.pid, buildId: 'conformance', protoMin: 1, protoMax: 1, capabilities: 0 }, 'toSupervisor'), false),
  },
  {
    id: 'unknown-message',
    title: 'a message of an unknown type: the daemon survives and serves on',
    section: '§4 §12',
    needs: 'bare',
    run: (ctx) => badFrame(ctx, 'a message of type "NoSuchMessage"', rawFrame(fixmap({ type: 'NoSuchMessage' })), false),
  },
];

// ---- cluster checks ---------------------------------------------------------------------

/** The daemon under test's program for the cluster (its data dir set both ways). */
export function clusterProgram(program: Program, dataDir: string, extra: Readonly<Record<string, string>> = {}): { command: string; args: string[]; env: Record<string, string> } {
  return { command: program.command, args: [...program.args], env: { ...program.env, KV_DATA_DIR: dataDir, ...extra } };
}

type Change = { readonly command?: string; readonly args?: readonly string[]; readonly env?: Readonly<Record<string, string>> };

/** A phase change as the supervisor's trigger socket reports it: the phase entered, the one left, and the time spent in it. */
interface PhaseLine {
  readonly to: string;
  readonly from: string;
  readonly phaseMs: number;
}

/** A handoff through the trigger socket; `onPhase` hears each phase change as the supervisor reports it. */
async function handoff(cluster: Cluster, change: Change, onPhase: (line: PhaseLine) => void = () => undefined): Promise<{ result: HandoffResult | null; error: string | null }> {
  const answers = await ask(cluster.triggerSocket, { cmd: 'upgrade', ...change }, (line: Answer) => {
    if (line.type === 'phase' && typeof line.phase === 'string') onPhase({ to: line.phase, from: typeof line.from === 'string' ? line.from : '', phaseMs: typeof line.phaseMs === 'number' ? line.phaseMs : 0 });
  }).catch((error: unknown): Answer[] => [{ type: 'error', code: 'SUPERVISOR_GONE', message: (error as Error).message }]);
  const result = answers.find((a) => a.type === 'result');
  if (result) return { result: result as unknown as HandoffResult, error: null };
  const last = answers.at(-1);
  return { result: null, error: last?.type === 'error' ? `${String(last.code)}: ${String(last.message)}` : `no result (last answer ${JSON.stringify(last ?? null)})` };
}

function describeResult(r: { result: HandoffResult | null; error: string | null }): string {
  if (!r.result) return `error ${r.error ?? '?'}`;
  const a = r.result.abortReason;
  return `${r.result.outcome}${a ? ` (${a.code}: ${a.reason.slice(0, 160)})` : ''}`;
}

/** A keep-alive connection left idle, so that the incumbent's drain lasts its grace: phase events come before the drain ends. */
async function idleConnection(port: number, path: string): Promise<Agent> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  await new Promise<void>((resolve) => {
    request({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume().on('end', () => {
        resolve();
      });
    })
      .on('error', () => {
        resolve();
      })
      .end();
  });
  return agent;
}

/** The serving daemon's revision as GET <health> reports it (`revision`, or the sum of `revisions`), or null. */
function revisionOf(health: Record<string, unknown> | null): number | null {
  if (!health) return null;
  if (typeof health.revision === 'number') return health.revision;
  if (Array.isArray(health.revisions) && health.revisions.every((r) => typeof r === 'number')) return health.revisions.reduce((a, b) => a + b, 0);
  return null;
}

/** The seal report in the journal (written before Begin), if any. */
function journalSeal(cluster: Cluster): number[] | null {
  try {
    const record = JSON.parse(readFileSync(cluster.journal, 'utf8')) as { phase?: string; seal?: { revisions?: number[] } | null };
    return record.phase === 'beginning' ? (record.seal?.revisions ?? null) : null;
  } catch {
    return null;
  }
}

/** What a scenario saw; `allowResets` when it killed a process that had accepted connections (decided from the outcome). */
interface ScenarioOutcome {
  readonly detail: string;
  readonly allowResets: boolean;
}

interface Scenario {
  run(cluster: Cluster, ctx: Context, load: LoadDriver): Promise<string | ScenarioOutcome>;
}

/** Runs `scenario` under load on the cluster, then checks the promises; a broken promise gets a fresh cluster for the next check. */
async function underLoad(ctx: Context, scenario: Scenario): Promise<string> {
  const cluster = ctx.cluster ?? fail(`not run: no cluster (${ctx.clusterFailure ?? 'cold start failed'})`);
  const load = new LoadDriver({ port: cluster.port, readPath: ctx.healthPath, readers: 2, writers: 1, probeEveryMs: 10, requestTimeoutMs: 8_000 }).start();
  let outcome: string | ScenarioOutcome;
  try {
    await load.waitForProgress(20);
    outcome = await scenario.run(cluster, ctx, load);
  } catch (error) {
    await load.stop();
    const problems = await checkPromises(cluster, null, { allowResets: true, convergeMs: 10_000 });
    // A fresh cluster that cannot start leaves ctx.cluster null: the next check fails saying so. This check's own error stands.
    if (problems.length > 0) await ctx.freshCluster().catch(() => undefined);
    throw error;
  }
  const { detail, allowResets } = typeof outcome === 'string' ? { detail: outcome, allowResets: false } : outcome;
  const problems = await checkPromises(cluster, load, { allowResets, convergeMs: 15_000 });
  if (problems.length > 0) {
    await ctx.freshCluster().catch(() => undefined);
    fail(`${detail}; but: ${problems.join('; ')}`);
  }
  const report = load.report();
  return `${detail}; load: ${report.requests} requests, ${report.acknowledgedWrites} acknowledged writes, none lost${report.errors.reset ? `, ${report.errors.reset} resets (allowed: a process that served was killed)` : ', 0 errors'}`;
}

/** A rollback: not committed, the incumbent serves on; `codes` are the acceptable abort codes. */
async function expectRollback(cluster: Cluster, change: Change, codes: readonly string[]): Promise<string> {
  const before = await cluster.health();
  const r = await handoff(cluster, change);
  if (!r.result) fail(`the supervisor answered no result: ${r.error ?? '?'}`);
  const result = r.result as HandoffResult;
  if (result.committed || result.outcome !== 'rolledBack') fail(`expected a rollback with ${codes.join(' or ')}, got ${describeResult(r)}`);
  if (!codes.includes(result.abortReason?.code ?? '')) fail(`rolled back with ${describeResult(r)}, expected ${codes.join(' or ')}`);
  const after = await cluster.waitFor('the incumbent to serve again', () => cluster.health(), 10_000);
  if (after.pid !== before?.pid) fail(`after the rollback pid ${after.pid} serves, not the incumbent ${String(before?.pid)}`);
  return `rolled back with ${result.abortReason?.code ?? '?'}; the incumbent (pid ${after.pid}) serves on`;
}

/** The reference daemon's program for a data directory; skips the check when there is none (no --reference, or not installed). */
function referenceDaemon(ctx: Context): (dataDir: string) => Program {
  const ref = ctx.reference ?? skip('needs --reference kv (the daemon keeps its data in the kv example\'s format)');
  if ('missing' in ref) return skip(ref.missing);
  return ref.program;
}

function knob(ctx: Context, name: KnobName, how: string): Readonly<Record<string, string>> {
  return ctx.knobs[name] ?? skip(`needs a fault knob: --knob ${name}=NAME=VALUE (environment that ${how})`);
}

/** Sends `signal` to `pid`; false when it is gone already (reaped). */
function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

type KillPhase = 'awaitingHello' | 'preparing' | 'sealing' | 'beginning' | 'committed';

/** Phases a handoff ends in, or passes through only on a failure. */
const ENDINGS = ['aborting', 'rolledBack', 'failed', 'committed'];

/**
 * Where a death landed: the phase the supervisor was in when it handled it, read from its
 * phase lines after the kill (`lines[from]` on) — the phase left by the first change the
 * death caused. A successor's death ends the handoff (→ rolledBack or failed) from the phase
 * it was handled in, unless its Ready came first (→ committed: after the commit point). An
 * incumbent's death in preparing or sealing sends Begin without a seal (→ beginning, outcome
 * promoted); a beginning reached by its SealComplete (not promoted) means it died after the seal.
 */
function landedIn(who: 'successor' | 'incumbent', lines: readonly PhaseLine[], from: number, result: HandoffResult | null): string | null {
  for (const line of lines.slice(from)) {
    if (line.to === 'committed') return 'committed';
    if (who === 'incumbent' && line.to === 'beginning') return line.from === 'sealing' && result?.outcome !== 'promoted' ? 'beginning' : line.from;
    if (ENDINGS.includes(line.to)) return line.from;
  }
  return null;
}

/** Waits (up to 15 s) until the supervisor serves again and a daemon answers: after a missed kill, before the next try. */
async function settled(cluster: Cluster): Promise<void> {
  await cluster.waitFor('a daemon to serve after a missed kill', async () => ((await cluster.status().catch(() => null))?.lifecycle === 'serving' ? cluster.health() : null), 15_000).catch(() => undefined);
}

/** Tries of a kill that landed outside its phase (the phase was over before the kit's kill reached it) before the check is skipped. */
const PHASE_TRIES = 3;

/**
 * SIGKILL of a daemon in `phase` of a handoff to the same program; the outcome and the
 * promises are checked. The kill fires as the supervisor's line announcing `phase` reaches
 * the kit, and the phase is held open where the kit can hold it:
 * - successor, awaitingHello: the successor is started through a shell that stops itself
 *   before it runs the daemon, so it cannot say Hello first;
 * - successor, preparing / sealing: the incumbent is frozen (SIGSTOP, a few milliseconds) as
 *   the phase begins, so it cannot finish its drain or seal before the death is handled;
 * - successor, beginning: the successor is frozen as preparing begins (it cannot send Ready),
 *   then killed as beginning begins;
 * - incumbent, preparing: an idle keep-alive connection keeps its drain open for the grace;
 * - incumbent, sealing, and anything the holds above cannot hold (a drain that ignores the
 *   grace): where the death landed is read from the supervisor's phase lines; a kill that
 *   landed elsewhere is tried again, and after {@link PHASE_TRIES} misses the check is skipped
 *   with where it landed — never passed.
 */
function atPhase(who: 'successor' | 'incumbent', phase: KillPhase, expect: (r: HandoffResult, hello: Hello | null) => string | null, after?: (cluster: Cluster, ctx: Context, r: HandoffResult, killed: { incumbent: number; victim: number; before: number }) => Promise<string>): Scenario {
  return {
    run: async (cluster, ctx) => {
      const misses: string[] = [];
      let allowResets = false;
      for (let attempt = 1; attempt <= PHASE_TRIES; attempt++) {
        const incumbent = (await cluster.waitFor('a daemon to serve before the handoff', () => cluster.health(), 10_000).catch(() => fail('nobody serves before the handoff'))).pid;
        const agent = await idleConnection(cluster.port, ctx.healthPath);
        const lines: PhaseLine[] = [];
        const frozen = new Set<number>();
        const freeze = (pid: number | null): void => {
          if (pid !== null && signal(pid, 'SIGSTOP')) frozen.add(pid);
        };
        const thaw = (): void => {
          for (const pid of frozen) signal(pid, 'SIGCONT');
          frozen.clear();
        };
        // Found once (a scan of /proc takes milliseconds, which a kill on time cannot wait for).
        let successorPid: number | null = null;
        const successor = (): number | null => (successorPid ??= cluster.daemonPids().find((pid) => pid !== incumbent) ?? null);
        let victim: number | null = null;
        let killedAt = -1;
        const eventsBefore = cluster.events.length;
        const p = clusterProgram(ctx.program, cluster.dataDir);
        // Stops itself before it execs the daemon: alive, and certainly silent until killed.
        const change: Change = who === 'successor' && phase === 'awaitingHello' ? { command: '/bin/sh', args: ['-c', 'kill -STOP $$; exec "$0" "$@"', p.command, ...p.args], env: p.env } : p;
        let r: { result: HandoffResult | null; error: string | null };
        try {
          r = await handoff(cluster, change, (line) => {
            lines.push(line);
            if (killedAt >= 0) {
              // The death was handled (or the handoff moved on): let a frozen incumbent go on.
              if (who === 'successor' && frozen.has(incumbent)) thaw();
              return;
            }
            // The successor exists once awaitingHello begins: find it before the phase that matters.
            if (who === 'successor' && line.to === 'awaitingHello') successor();
            // Frozen once the seal begins (not before: the supervisor seals only once the successor has every connection moved to it), so that it cannot answer Begin before the kill.
            if (who === 'successor' && phase === 'beginning' && line.to === 'sealing') freeze(successor());
            if (line.to !== phase) return;
            // Before anything else: the incumbent must not finish its drain or seal meanwhile.
            if (who === 'successor' && (phase === 'preparing' || phase === 'sealing')) freeze(incumbent);
            victim = who === 'incumbent' ? incumbent : successor();
            if (victim !== null && signal(victim, 'SIGKILL')) killedAt = lines.length;
            else thaw();
          });
        } finally {
          agent.destroy();
          thaw();
        }
        const killed = victim as number | null; // set in the callback
        if (killedAt < 0 && who === 'successor' && phase === 'beginning' && r.result?.abortReason?.code === 'HANDOFF_SUCCESSOR_SILENT') {
          // Frozen from the seal on, it went silent before beginning: the seal outlasted the liveness timeout.
          misses.push(`no beginning: the successor, frozen from the seal on, was silent past the liveness timeout first (${describeResult(r)})`);
          await settled(cluster);
          continue;
        }
        if (killedAt < 0 || killed === null) fail(`the supervisor never entered phase ${phase} with a ${who} to kill (${describeResult(r)}; phases: ${lines.map((l) => l.to).join(' → ')})`);
        if (!r.result) fail(`the supervisor answered no result: ${r.error ?? '?'}`);
        const result = r.result as HandoffResult;
        // A kill on the committed line lands after the commit point by definition (committed is final).
        const landed = phase === 'committed' ? 'committed' : (landedIn(who, lines, killedAt, result) ?? 'an unknown phase');
        // Resets are allowed when a killed process had accepted connections: the incumbent, or a successor past the commit point.
        allowResets ||= who === 'incumbent' || result.committed;
        if (landed !== phase) {
          misses.push(`${landed} (${describeResult(r)})`);
          // Whatever it did, let the supervisor settle (a restart after a commit) before the next try.
          await settled(cluster);
          continue;
        }
        const what = `SIGKILL of the ${who} (pid ${String(killed)}) landed in ${landed}${attempt > 1 ? ` (try ${attempt}; missed: ${misses.join(', ')})` : ''}`;
        const problem = expect(result, ctx.hello);
        if (problem) fail(`${what}: ${problem} (got ${describeResult(r)})`);
        const more = after ? `; ${await after(cluster, ctx, result, { incumbent, victim: killed as number, before: eventsBefore })}` : '';
        return { detail: `${what}: ${describeResult(r)}${more}`, allowResets };
      }
      return skip(`a SIGKILL of the ${who} as phase ${phase} began never landed in it in ${PHASE_TRIES} tries (it landed in ${misses.join('; ')}): the phase ends before the kit can act on its line`);
    },
  };
}

/** A successor frozen (SIGSTOP) as preparing begins: the supervisor notices its silence within the liveness timeout and rolls back. */
function frozenSuccessor(): Scenario {
  return {
    run: async (cluster, ctx) => {
      const incumbent = (await cluster.health())?.pid ?? fail('nobody serves before the handoff');
      const agent = await idleConnection(cluster.port, ctx.healthPath);
      const lines: PhaseLine[] = [];
      const frozen: { pid: number | null } = { pid: null };
      const r = await handoff(cluster, clusterProgram(ctx.program, cluster.dataDir), (line) => {
        lines.push(line);
        if (line.to !== 'preparing' || frozen.pid !== null) return;
        const pid = cluster.daemonPids().find((p) => p !== incumbent) ?? null;
        if (pid !== null && signal(pid, 'SIGSTOP')) frozen.pid = pid;
      }).finally(() => {
        agent.destroy();
        if (frozen.pid !== null) signal(frozen.pid, 'SIGCONT');
      });
      const victim = frozen.pid;
      if (victim === null) fail(`the supervisor never entered phase preparing with a successor to freeze (${describeResult(r)})`);
      const result = r.result ?? fail(`the supervisor answered no result: ${r.error ?? '?'}`);
      const noticed = lines.find((l) => ENDINGS.includes(l.to));
      if (result.outcome !== 'rolledBack' || result.abortReason?.code !== 'HANDOFF_SUCCESSOR_SILENT') fail(`SIGSTOP of the successor (pid ${String(victim)}) as preparing began: expected a rollback with HANDOFF_SUCCESSOR_SILENT (got ${describeResult(r)})`);
      return `SIGSTOP of the successor (pid ${String(victim)}) as preparing began; the supervisor noticed its silence in ${noticed?.from ?? '?'}: ${describeResult(r)}`;
    },
  };
}

const rolledBack = (r: HandoffResult): string | null => (r.outcome === 'rolledBack' ? null : 'expected a rollback');
/** An incumbent dead before its seal completed: its successor recovers from disk (promoted) when it can, else a cold start. */
const promotedOrColdStart = (r: HandoffResult, hello: Hello | null): string | null => {
  const recovers = hello !== null && hasCapability(hello.capabilities, 'RecoverFromDisk');
  if (r.outcome === 'promoted') return null;
  if (r.outcome === 'coldStart') return recovers ? 'the daemon announces RecoverFromDisk, so its successor should have recovered from disk (promoted)' : null;
  return `expected ${recovers ? 'promoted (the daemon announces RecoverFromDisk)' : 'promoted or coldStart'}`;
};

const CLUSTER: CheckDef[] = [
  {
    id: 'cold-start',
    title: 'handoff-supervisor cold-starts the daemon: it serves, holds the lock and answers on its control socket',
    section: '§2 §10',
    needs: 'cluster',
    run: async (ctx) => {
      const cluster = ctx.cluster ?? fail(ctx.clusterFailure ?? 'no cluster');
      const status = await cluster.status();
      const health = await cluster.health();
      const lock = cluster.lock();
      if (status.lifecycle !== 'serving' || status.incumbent?.pid !== health?.pid) fail(`the supervisor reports ${status.lifecycle} with pid ${String(status.incumbent?.pid)}, the daemon serving is ${String(health?.pid)}`);
      if (!lock.held || lock.pid !== health?.pid) fail(`the lock is ${lock.held ? `held by ${String(lock.pid)}` : 'free'}, not by the serving daemon ${String(health?.pid)}`);
      return `pid ${String(health?.pid)} serves, holds the lock, and has a supervisor session`;
    },
  },
  {
    id: 'handoff-self',
    title: 'a handoff to the same program under load commits: a new pid serves, no error, no lost write, the revision continues',
    section: '§7 §16',
    needs: 'cluster',
    run: (ctx) =>
      underLoad(ctx, {
        run: async (cluster) => {
          const before = await cluster.health();
          const r = await handoff(cluster, clusterProgram(ctx.program, cluster.dataDir));
          if (!r.result?.committed) fail(`the handoff did not commit: ${describeResult(r)}`);
          const after = await cluster.waitFor('the new daemon to serve', async () => {
            const h = await cluster.health();
            return h && h.pid !== before?.pid ? h : null;
          });
          const rb = revisionOf(before);
          const ra = revisionOf(after);
          if (rb !== null && ra !== null && ra < rb) fail(`the revision went back from ${rb} to ${ra}`);
          return `committed in ${r.result?.timings.totalMs ?? '?'} ms: pid ${String(before?.pid)} → ${after.pid}${rb !== null && ra !== null ? `, revision ${rb} → ${ra}` : ''}`;
        },
      }),
  },
  {
    id: 'revision-continuity',
    title: 'after a handoff the serving revision is at least the sealed one (the seal report in the journal)',
    section: '§6 §16',
    needs: 'cluster',
    run: (ctx) =>
      underLoad(ctx, {
        run: async (cluster) => {
          // The successor is held (SIGSTOP) from the start of the seal until Begin was sent, so that
          // the journal still holds the seal report when it is read: it cannot send Ready meanwhile.
          // Not from the drain on: a supervisor moving connections seals only once the successor
          // has every descriptor passed to it, which a held successor never acknowledges. The hold
          // lasts the seal, well within the liveness timeout (1 s); how long it lasted is in the detail.
          // The hold begins on the kit's reading of the phase line: on a loaded machine the successor
          // may have answered Begin before it, and the journal moved on. Such a try is made again.
          const attempt = async (): Promise<{ seal: number[] | null; heldMs: number | null }> => {
            const incumbent = (await cluster.health())?.pid ?? fail('nobody serves');
            const agent = await idleConnection(cluster.port, ctx.healthPath);
            let sealed: number[] | null = null;
            let held: number | null = null;
            let heldAt = 0;
            let heldMs: number | null = null;
            const release = (): void => {
              if (held === null || heldMs !== null) return;
              heldMs = Date.now() - heldAt;
              signal(held, 'SIGCONT');
            };
            const r = await handoff(cluster, clusterProgram(ctx.program, cluster.dataDir), (line) => {
              if (line.to === 'sealing') {
                held = cluster.daemonPids().find((pid) => pid !== incumbent) ?? null;
                if (held !== null && !signal(held, 'SIGSTOP')) held = null;
                heldAt = Date.now();
              } else if (line.to === 'beginning') {
                // The supervisor reports the phase as it enters it, then journals the seal report and
                // sends Begin: the line may come first. The held successor cannot move the journal on.
                void waitForValue('the journal to hold the seal report', () => journalSeal(cluster), 500, { everyMs: 2 })
                  .then((seal) => (sealed = seal), () => undefined)
                  .finally(release);
              } else if (ENDINGS.includes(line.to)) {
                release();
              }
            }).finally(() => {
              agent.destroy();
              release();
            });
            if (!r.result?.committed) fail(`the handoff did not commit: ${describeResult(r)}`);
            return { seal: sealed as number[] | null, heldMs: heldMs as number | null };
          };
          let tried = await attempt();
          for (let n = 1; n < PHASE_TRIES && tried.seal === null; n++) tried = await attempt();
          const { seal, heldMs } = tried;
          if (seal === null) fail(`no seal report in the journal when Begin was sent (${PHASE_TRIES} tries)`);
          const health = await cluster.health();
          const now = revisionOf(health);
          if (now === null) skip(`GET ${ctx.healthPath} reports no "revision" (or "revisions") to compare with the sealed ${JSON.stringify(seal)}`);
          const sum = (seal ?? []).reduce((a, b) => a + b, 0);
          if ((now ?? 0) < sum) fail(`the successor serves revision ${String(now)}, below the sealed ${JSON.stringify(seal)}`);
          return `sealed ${JSON.stringify(seal)}, serving revision ${String(now)} (the successor was held ${String(heldMs)} ms from the seal to Begin)`;
        },
      }),
  },
  {
    id: 'stale-successor',
    title: 'a successor whose data does not continue the seal is refused (HANDOFF_REVISIONS_DIVERGED); the incumbent serves on',
    section: '§6 §16',
    needs: 'cluster',
    run: (ctx) => {
      const env = knob(ctx, 'stale', 'makes a successor open data older than the seal');
      return underLoad(ctx, { run: (cluster) => expectRollback(cluster, clusterProgram(ctx.program, cluster.dataDir, env), ['HANDOFF_REVISIONS_DIVERGED']) });
    },
  },
  {
    id: 'abort-spawn-nonexistent',
    title: 'a handoff to a command that does not exist changes nothing: the incumbent serves on',
    section: '§8',
    needs: 'cluster',
    run: (ctx) =>
      underLoad(ctx, {
        run: async (cluster) => {
          const before = await cluster.health();
          const r = await handoff(cluster, { command: join(ctx.dir, 'no-such-daemon'), args: [] });
          // A rollback with HANDOFF_SPAWN_FAILED, or the binary's refusal of a command it cannot run (HANDOFF_SPAWN): nothing else.
          const refused = r.result === null && /^HANDOFF_SPAWN(_FAILED)?: /.test(r.error ?? '');
          const rolled = r.result !== null && !r.result.committed && r.result.outcome === 'rolledBack' && r.result.abortReason?.code === 'HANDOFF_SPAWN_FAILED';
          if (!refused && !rolled) fail(`expected a rollback with HANDOFF_SPAWN_FAILED (or a refusal with HANDOFF_SPAWN), got ${describeResult(r)}`);
          const after = await cluster.health();
          if (after?.pid !== before?.pid) fail(`pid ${String(after?.pid)} serves, not the incumbent ${String(before?.pid)}`);
          return `${r.result ? describeResult(r) : `refused: ${r.error ?? '?'}`}; the incumbent (pid ${String(after?.pid)}) serves on`;
        },
      }),
  },
  {
    id: 'abort-successor-exits',
    title: 'a successor that exits at once (`false`) rolls back (HANDOFF_SUCCESSOR_EXITED); the incumbent serves on',
    section: '§8',
    needs: 'cluster',
    run: (ctx) => underLoad(ctx, { run: (cluster) => expectRollback(cluster, { command: 'false', args: [] }, ['HANDOFF_SUCCESSOR_EXITED']) }),
  },
  {
    id: 'abort-hello-timeout',
    title: 'a successor that never says Hello rolls back after the hello timeout; the incumbent was never asked to drain',
    section: '§8 §9',
    needs: 'cluster',
    run: (ctx) =>
      underLoad(ctx, {
        run: async (cluster) => {
          const p = clusterProgram(ctx.program, cluster.dataDir);
          // Stops itself before it execs the daemon: alive, silent.
          return expectRollback(cluster, { command: '/bin/sh', args: ['-c', 'kill -STOP $$; exec "$0" "$@"', p.command, ...p.args], env: p.env }, ['HANDOFF_PHASE_TIMEOUT', 'HANDOFF_SUCCESSOR_SILENT']);
        },
      }),
  },
  {
    id: 'abort-slow-ready',
    title: 'a successor slower than the ready timeout (still heartbeating) rolls back with HANDOFF_PHASE_TIMEOUT; the incumbent re-takes the lock',
    section: '§8 §9',
    needs: 'cluster',
    run: (ctx) => {
      const env = knob(ctx, 'slow-ready', 'delays the successor between Begin and Ready by more than 5 s (the kit\'s ready timeout) while it heartbeats');
      return underLoad(ctx, {
        run: async (cluster) => {
          try {
            return await expectRollback(cluster, clusterProgram(ctx.program, cluster.dataDir, env), ['HANDOFF_PHASE_TIMEOUT']);
          } catch (error) {
            if (error instanceof CheckFailed && error.message.includes('HANDOFF_SUCCESSOR_SILENT')) fail(`${error.message} — the successor stopped heartbeating during its takeover (long hooks MUST keep heartbeating, §9)`);
            throw error;
          }
        },
      });
    },
  },
  {
    id: 'abort-seal-failed',
    title: 'an incumbent whose seal fails says SealFailed, keeps its lock and serves on (HANDOFF_SEAL_FAILED)',
    section: '§8 §10',
    needs: 'cluster',
    run: (ctx) => {
      const env = knob(ctx, 'seal-fail', 'makes the daemon\'s seal fail');
      return underLoad(ctx, {
        run: async (cluster) => {
          const to = await handoff(cluster, clusterProgram(ctx.program, cluster.dataDir, env));
          if (!to.result?.committed) fail(`the handoff to the program with the seal-fail knob did not commit: ${describeResult(to)}`);
          const incumbent = (await cluster.waitFor('the knob program to serve', () => cluster.health())).pid;
          const detail = await expectRollback(cluster, clusterProgram(ctx.program, cluster.dataDir), ['HANDOFF_SEAL_FAILED']);
          const lock = cluster.lock();
          if (!lock.held || lock.pid !== incumbent) fail(`after the failed seal the lock is ${lock.held ? `held by ${String(lock.pid)}` : 'free'}, not by the incumbent ${incumbent}`);
          return detail;
        },
      }).finally(async () => {
        // Its seal always fails, so it can never be handed off: the next checks get a fresh cluster.
        await ctx.freshCluster().catch(() => undefined);
      });
    },
  },
  {
    id: 'abort-cancel',
    title: 'a cancelled handoff rolls back (HANDOFF_CANCELLED)',
    section: '§8',
    needs: 'cluster',
    run: () => Promise.resolve(skip('handoff-supervisor has no cancel request (handoffctl neither); it cancels only when its journal cannot be written, which the kit cannot cause from outside')),
  },
  ...(['awaitingHello', 'preparing', 'sealing', 'beginning'] as const).map(
    (phase): CheckDef => ({
      id: `successor-killed-${phase}`,
      title: `SIGKILL of the successor in phase ${phase}: rollback, the incumbent serves on`,
      section: '§8 §10',
      needs: 'cluster',
      run: (ctx) => underLoad(ctx, atPhase('successor', phase, rolledBack)),
    }),
  ),
  {
    id: 'successor-killed-committed',
    title: 'SIGKILL of the new daemon right after the commit point: the commit stands and the supervisor restarts the committed program',
    section: '§8 §10',
    needs: 'cluster',
    run: (ctx) =>
      underLoad(
        ctx,
        atPhase(
          'successor',
          'committed',
          (r) => (r.committed ? null : 'expected the commit to stand'),
          async (cluster, c, _r, killed) => {
            const serving = await cluster
              .waitFor('another daemon to serve after the kill', async () => {
                const h = await cluster.health();
                return h && h.pid !== killed.victim && h.pid !== killed.incumbent ? h : null;
              }, 15_000)
              .catch(() => fail(`no daemon other than the killed ${killed.victim} (or the old incumbent ${killed.incumbent}) serves within 15 s of the kill`));
            // Its log (read as it comes): the restart after the death, then the start of the pid that serves.
            const logged = (): { restart: Record<string, unknown> | undefined; started: Record<string, unknown> | undefined } => {
              const events = cluster.events.slice(killed.before);
              const restart = events.findIndex((e) => e.msg === 'restart' && String(e.reason).includes(`pid ${killed.victim}`));
              return { restart: events[restart], started: restart < 0 ? undefined : events.slice(restart).find((e) => e.msg === 'cold-start' && e.daemonPid === serving.pid) };
            };
            await cluster.waitFor('the supervisor to log the restart', () => logged().started, 5_000).catch(() => undefined);
            const { restart, started } = logged();
            if (!restart) fail(`pid ${serving.pid} serves, but the supervisor logged no restart after the death of the new daemon (pid ${killed.victim})`);
            if (!started) fail(`pid ${serving.pid} serves, but the supervisor logged no start of it after the restart`);
            const command = String(started?.command);
            if (command !== c.program.command && basename(command) !== basename(c.program.command)) fail(`the supervisor restarted ${command}, not the committed program ${c.program.command}`);
            return `the supervisor restarted the committed program: pid ${serving.pid} serves`;
          },
        ),
      ),
  },
  {
    id: 'incumbent-killed-preparing',
    title: 'SIGKILL of the incumbent during its drain: promoted (RecoverFromDisk) or a cold start; one daemon serves',
    section: '§8',
    needs: 'cluster',
    run: (ctx) => underLoad(ctx, atPhase('incumbent', 'preparing', promotedOrColdStart)),
  },
  {
    id: 'incumbent-killed-sealing',
    title: 'SIGKILL of the incumbent during its seal: promoted (RecoverFromDisk) or a cold start; one daemon serves',
    section: '§8',
    needs: 'cluster',
    run: (ctx) => underLoad(ctx, atPhase('incumbent', 'sealing', promotedOrColdStart)),
  },
  {
    id: 'successor-frozen',
    title: 'a successor frozen (SIGSTOP) past the liveness timeout is silent: rollback (HANDOFF_SUCCESSOR_SILENT)',
    section: '§9',
    needs: 'cluster',
    run: (ctx) => underLoad(ctx, frozenSuccessor()),
  },
  {
    id: 'control-intruder',
    title: 'garbage and an oversized frame on the serving daemon\'s control socket, then a handoff still commits',
    section: '§2 §3',
    needs: 'cluster',
    run: (ctx) =>
      underLoad(ctx, {
        run: async (cluster) => {
          const serving = (await cluster.health())?.pid ?? fail('nobody serves');
          for (const bytes of [rawFrame(new Uint8Array([0xc1])), new Uint8Array([0x7f, 0xff, 0xff, 0xff, 0, 1])]) {
            const client = await ControlClient.connect(cluster.controlSocket).catch((e: unknown) => fail((e as Error).message));
            try {
              const problem = helloProblem(await client.first(), 'incumbent', serving);
              if (problem) fail(problem);
              client.write(bytes);
              await client.closesWithin(500);
            } finally {
              client.destroy();
            }
          }
          const r = await handoff(cluster, clusterProgram(ctx.program, cluster.dataDir));
          if (!r.result?.committed) fail(`after the intruder's frames the handoff did not commit: ${describeResult(r)}`);
          return `the daemon greeted the intruder, survived its frames, and the next handoff committed (${r.result?.timings.totalMs ?? '?'} ms)`;
        },
      }),
  },
  {
    id: 'reference-to',
    title: 'a handoff from the daemon to the reference kv daemon commits and the reference serves every acknowledged write (same data format)',
    section: '§16',
    needs: 'cluster',
    run: (ctx) => {
      const ref = referenceDaemon(ctx);
      return underLoad(ctx, {
        run: async (cluster) => {
          const p = ref(cluster.dataDir);
          const r = await handoff(cluster, { command: p.command, args: p.args, env: p.env });
          if (!r.result?.committed) fail(`the handoff to the reference daemon did not commit: ${describeResult(r)}`);
          const health = await cluster.waitFor('the reference daemon to serve', () => cluster.health());
          return `committed: the reference daemon (pid ${health.pid}) took over the data`;
        },
      });
    },
  },
  {
    id: 'reference-from',
    title: 'a handoff from the reference kv daemon back to the daemon commits and it serves every acknowledged write',
    section: '§16',
    needs: 'cluster',
    run: (ctx) => {
      const ref = referenceDaemon(ctx);
      return underLoad(ctx, {
        run: async (cluster) => {
          const p = ref(cluster.dataDir);
          const current = await cluster.status();
          if (current.program.command !== p.command || JSON.stringify(current.program.args) !== JSON.stringify(p.args)) {
            const to = await handoff(cluster, { command: p.command, args: p.args, env: p.env });
            if (!to.result?.committed) fail(`the handoff to the reference daemon did not commit: ${describeResult(to)}`);
          }
          const ledger = await writeSome(cluster, 20);
          const r = await handoff(cluster, clusterProgram(ctx.program, cluster.dataDir));
          if (!r.result?.committed) fail(`the handoff from the reference daemon did not commit: ${describeResult(r)}`);
          const lost = await verifyLedger(cluster.port, ledger);
          if (lost.length) fail(`the daemon does not serve ${lost.length} writes the reference daemon acknowledged: ${lost.slice(0, 5).join(', ')}`);
          return `committed: the daemon (pid ${String((await cluster.health())?.pid)}) took over the reference daemon's data`;
        },
      });
    },
  },
  {
    id: 'stop',
    title: 'handoffctl stop: the daemon drains and exits 0, the lock is free, and every acknowledged write is in its data',
    section: '§10 §15',
    needs: 'cluster',
    run: async (ctx) => {
      const cluster = ctx.cluster ?? fail(`not run: no cluster (${ctx.clusterFailure ?? 'cold start failed'})`);
      const serving = (await cluster.health())?.pid ?? fail('nobody serves');
      const load = new LoadDriver({ port: cluster.port, readPath: ctx.healthPath, readers: 2, writers: 1, probeEveryMs: 0 }).start();
      await load.waitForProgress(20);
      const report = await load.stop();
      const started = Date.now();
      await ask(cluster.triggerSocket, { cmd: 'stop' }).catch(() => []);
      await cluster.waitFor('the supervisor to exit after stop', () => cluster.supervisorPid === null, 20_000).catch(() => fail('the supervisor did not exit within 20 s of stop'));
      const ms = Date.now() - started;
      const exited = cluster.events.find((e) => e.msg === 'daemon-exited' && e.daemonPid === serving);
      if (!exited) fail(`the supervisor logged no exit of the daemon (pid ${serving})`);
      if (exited?.reason !== 'exit code 0') fail(`the daemon (pid ${serving}) ended with ${String(exited?.reason)}; on SIGTERM it MUST drain, seal and exit 0`);
      const left = cluster.daemonPids();
      if (left.length) fail(`daemons still alive after stop: ${left.join(', ')}`);
      const lock = cluster.lock();
      if (lock.held) fail(`the lock is still held (pid file: ${String(lock.pid)}) after stop`);
      // Start again: every acknowledged write must be there.
      await cluster.startSupervisor();
      await cluster.waitFor('the daemon to serve after a restart', () => cluster.health());
      const lost = await verifyLedger(cluster.port, load.ledger);
      if (lost.length) fail(`${lost.length} of ${load.ledger.size} acknowledged writes missing after stop and start: ${lost.slice(0, 5).join(', ')}`);
      return `stopped in ${ms} ms: the daemon exited 0, the lock is free; after a start all ${report.acknowledgedWrites} acknowledged writes are served`;
    },
  },
];

/** Writes `n` keys and returns the acknowledged ones. */
async function writeSome(cluster: Cluster, n: number): Promise<Map<string, string>> {
  const ledger = new Map<string, string>();
  for (let i = 0; i < n; i++) {
    const key = `conformance-${Date.now().toString(36)}-${i}`;
    const value = `v${i}`;
    const ok = await new Promise<boolean>((resolve) => {
      request({ host: '127.0.0.1', port: cluster.port, method: 'PUT', path: `/kv/${key}`, agent: false, headers: { 'content-length': value.length } }, (res) => {
        res.resume().on('end', () => {
          resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300);
        });
      })
        .on('error', () => {
          resolve(false);
        })
        .end(value);
    });
    if (ok) ledger.set(key, value);
  }
  return ledger;
}

/** Every check, in the order they run. */
export const CHECKS: readonly CheckDef[] = [...BARE, ...CLUSTER];

export { dataDirEnv };
