/**
 * The incumbent driver: serves supervisor sessions on the control socket and runs the
 * incumbent state machine of `@handoff/protocol` against the user's {@link Drainable}.
 * It never exits the process; {@link Incumbent.exited} says when and with which code to.
 */
import { channel as diagnosticsChannel } from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import { FieldLimits, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, canOfferConnections, capabilities as capabilityBits, hasCapability, incumbentTransition, initialIncumbentState } from '@handoff/protocol';
import type { DaemonConfig, DrainProgress, IncumbentEffect, IncumbentEvent, IncumbentPhase, IncumbentState, IncumbentTimer, Reload, ReloadDone, ReloadProgress, SealReport } from '@handoff/protocol';
import { Channel } from './channel.js';
import { bindControlSocket } from './control-socket.js';
import type { BoundControlSocket } from './control-socket.js';
import { crashPoint } from './crash-points.js';
import { CoreError, CoreErrorCode } from './errors.js';
import { MachineDriver, assertNever, messageOf, readBeforeJudging } from '@handoff/protocol/internal';
import { spawnHolder } from './holder.js';
import { DataDirLock } from './lock.js';
import { ConnectionOffers } from './moving.js';
import { progressDetail, progressPhase } from './reload.js';
import type { ReloadStep, Reloader } from './reload.js';

/** What drain reports. */
export interface DrainReport {
  readonly openConnsRemaining: number;
  readonly acceptClosed: boolean;
  /** Tracked long-lived work items the drain cut (Drained's `workCut`; 0 when absent). */
  readonly workCut?: number;
}

/** What a drain still waits for (DrainProgress without its type and handoff id). */
export type DrainProgressReport = Omit<DrainProgress, 'type' | 'handoffId'>;

/** What a drain is told besides its deadline (PROTOCOL.md section 6, "Long-lived work"). */
export interface DrainContext {
  /** Cut tracked long-lived work at once instead of waiting for it (the operator's `--no-drain-wait`). */
  readonly cutWork: boolean;
  /** Report what the drain still waits for; sent as DrainProgress where the supervisor agreed to it. */
  readonly progress: (report: DrainProgressReport) => void;
  /**
   * Present when the supervisor asked for idle connections to move (PrepareHandoff's
   * `moveConns`): offer each idle one here instead of closing it (PROTOCOL.md section 6,
   * "Moving connections"); an offered connection is no longer the drain's to wait for.
   */
  readonly offers?: ConnectionOffers;
}

/** A seal report, with the application state to hand to the successor (opaque bytes, at most 512 KiB). */
export type SealOutcome = SealReport & { readonly state?: Uint8Array | null };

/** The daemon's side of a handoff, implemented by the user (or by the high-level API). */
export interface Drainable {
  /**
   * Stop accepting, finish in-flight work, fsync — by `deadline` (epoch ms); stop early when
   * `signal` aborts. `graceMs` is the supervisor's drain grace (PrepareHandoff's
   * `drainGraceMs`): idle keep-alive connections are closed after it. `context` says whether
   * to cut tracked work at once and where to report progress (absent on a stop).
   */
  drain(deadline: number, signal: AbortSignal, graceMs?: number, context?: DrainContext): Promise<DrainReport>;
  /**
   * Flush, fsync and close the writer; report the last revision per shard, and the state to
   * hand over if any (Begin's `state`). The lock is released right after.
   */
  seal(signal: AbortSignal, progress: (completed: number, total: number) => void): Promise<SealOutcome>;
  /** The handoff was abandoned: re-open the writer if sealed (the lock is held again) and accept again. */
  resumeAfterAbort(): Promise<void>;
}

/** Options of {@link Incumbent.bind}. */
export interface IncumbentOptions {
  readonly controlSocket: string;
  /**
   * The data-directory lock this process holds; null for a daemon without a data directory
   * (which may announce `Overlap` in `capabilities`: its successor accepts before it stops,
   * PROTOCOL.md section 7).
   */
  readonly lock: DataDirLock | null;
  readonly drainable: Drainable;
  readonly buildId: string;
  readonly capabilities?: number;
  readonly heartbeatMs?: number;
  readonly livenessMs?: number;
  /** How long a resuming incumbent retries a lock held by another process. Default 3 s. */
  readonly lockRetryMs?: number;
  /** Take over a control socket path a live process serves (a committed successor). */
  readonly replaceControlSocket?: boolean;
  /**
   * The listeners' fds open in this process, by name, for a listener holder asked for with
   * SpawnHolder. Without it the daemon does not announce the SpawnHolder capability.
   */
  readonly listenerFds?: () => readonly { readonly name: string; readonly fd: number }[];
  /**
   * Answers Reload (PROTOCOL.md section 6, "Reload"): swaps a plugin or re-reads the
   * configuration in place. Without it the daemon does not announce the Reload capability.
   */
  readonly reloader?: Reloader;
}

/** Why and how the incumbent is done: the process should exit with `code`. */
export interface IncumbentExit {
  readonly code: number;
  readonly reason: string;
}

const phaseChannel = diagnosticsChannel('handoff:incumbent:phase');
const holderChannel = diagnosticsChannel('handoff:incumbent:holder');
const reloadChannel = diagnosticsChannel('handoff:incumbent:reload');
/** How often a reload that runs long says so (the supervisor gives up after a minute of silence). */
const RELOAD_KEEPALIVE_MS = 10_000;

/** Default capabilities of a Node daemon using this library. */
export const DAEMON_CAPABILITIES = capabilityBits('SealProgress', 'RecoverFromDisk', 'ReserveListeners', 'CommitToSuccessor', 'DrainProgress');

/**
 * The capabilities a daemon announces: `Overlap` without a data directory, `SpawnHolder` when
 * it can name its listeners' fds, `Reload` when it has plugins or a configuration hook.
 */
export function defaultCapabilities(options: { readonly stateless: boolean; readonly spawnHolder: boolean; readonly reload?: boolean; readonly moveConnections?: boolean }): number {
  const extra = capabilityBits(
    ...(options.stateless ? (['Overlap'] as const) : []),
    ...(options.spawnHolder ? (['SpawnHolder'] as const) : []),
    ...(options.reload === true ? (['Reload'] as const) : []),
    ...(options.moveConnections === true ? (['MoveConnections'] as const) : []),
  );
  return (DAEMON_CAPABILITIES | extra) >>> 0;
}

/** The machine configuration of this process as a daemon (incumbent or successor). */
export function daemonConfig(buildId: string, options: { readonly capabilities?: number; readonly heartbeatMs?: number; readonly livenessMs?: number }): DaemonConfig {
  return {
    pid: process.pid,
    buildId,
    versions: { min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX },
    capabilities: options.capabilities ?? DAEMON_CAPABILITIES,
    heartbeatMs: options.heartbeatMs ?? 500,
    livenessMs: options.livenessMs ?? 3_000,
  };
}

/** A serving incumbent. */
export class Incumbent {
  readonly #options: IncumbentOptions;
  #lock: DataDirLock | null;
  readonly #machine: MachineDriver<IncumbentState, IncumbentEvent, IncumbentEffect, IncumbentTimer>;
  #control: BoundControlSocket | undefined;
  #channel: Channel<'toSupervisor'> | undefined;
  #hook: { controller: AbortController; done: Promise<void> } | undefined;
  /** The connections the current handoff's drain offered to the successor, until it commits or rolls back. */
  #offers: ConnectionOffers | undefined;
  #resolveExit!: (exit: IncumbentExit) => void;
  /** Resolves when this incumbent is done (committed, or could not resume). */
  readonly exited: Promise<IncumbentExit>;

  private constructor(options: IncumbentOptions) {
    this.#options = options;
    this.#lock = options.lock;
    const capabilities = options.capabilities ?? defaultCapabilities({ stateless: false, spawnHolder: options.listenerFds !== undefined, reload: options.reloader !== undefined });
    this.#machine = new MachineDriver({
      initial: initialIncumbentState(daemonConfig(options.buildId, { ...options, capabilities })),
      transition: incumbentTransition,
      // A drain or seal that blocked this event loop must not make the live supervisor look dead.
      postpone: readBeforeJudging(),
      onEffect: (effect) => {
        this.#run(effect);
      },
      onStep: ({ before, after, event }) => {
        if (after.phase !== before.phase && phaseChannel.hasSubscribers) {
          phaseChannel.publish({ pid: process.pid, from: before.phase, to: after.phase, event: event.type, reason: after.reason });
        }
      },
    });
    this.exited = new Promise((resolve) => {
      this.#resolveExit = resolve;
    });
  }

  /**
   * Binds the control socket and starts serving supervisor sessions.
   * @throws CoreError when the control socket is served by a live process.
   */
  static async bind(options: IncumbentOptions): Promise<Incumbent> {
    if (options.lock !== null && options.lock.state !== 'held') throw new CoreError(CoreErrorCode.WrongState, 'Incumbent.bind needs a held DataDirLock (or null for a daemon without a data directory)');
    const incumbent = new Incumbent(options);
    incumbent.#control = await bindControlSocket(options.controlSocket, (socket) => {
      incumbent.#onConnection(socket);
    }, { replace: options.replaceControlSocket ?? false });
    return incumbent;
  }

  /** The machine's phase. */
  get phase(): IncumbentPhase {
    return this.#machine.state.phase;
  }

  /** The lock held now (a new one after resuming from a released lock); null without a data directory. */
  get lock(): DataDirLock | null {
    return this.#lock;
  }

  /**
   * Stops serving sessions. The control socket's path is unlinked if it is still ours —
   * except after a commit, when the successor owns the path.
   */
  async close(): Promise<void> {
    this.#machine.stopTimers();
    this.#channel?.close('incumbent closing');
    this.#channel = undefined;
    await this.#control?.close({ unlink: this.#machine.state.phase !== 'committed' });
    this.#control = undefined;
  }

  #onConnection(socket: Socket): void {
    const previous = this.#channel;
    this.#channel = undefined;
    previous?.close('replaced by a new supervisor session');
    const channel = new Channel(socket, 'toSupervisor');
    this.#channel = channel;
    channel.on('message', (message) => {
      if (this.#channel !== channel) return;
      crashPoint(`incumbent:received-${message.type}`);
      this.#feed({ type: 'message', message });
    });
    channel.on('close', (reason) => {
      if (this.#channel !== channel) return;
      this.#channel = undefined;
      this.#feed({ type: 'sessionClosed', reason });
    });
    this.#feed({ type: 'sessionOpened' });
  }

  #feed(event: IncumbentEvent): void {
    this.#machine.feed(event);
  }

  #run(effect: Exclude<IncumbentEffect, { type: 'setTimer' | 'cancelTimer' }>): void {
    switch (effect.type) {
      case 'send':
        this.#channel?.send(effect.message);
        crashPoint(`incumbent:sent-${effect.message.type}`);
        return;
      case 'closeSession': {
        const channel = this.#channel;
        this.#channel = undefined;
        channel?.close('closed by the incumbent');
        return;
      }
      case 'startDrain': {
        const { drainable } = this.#options;
        // Offers during the first half of the drain window, acknowledgements until 60% of it: the
        // drain ends well before its deadline however many connections there are (the rest drain as before).
        const started = Date.now();
        const offers = effect.moveConns
          ? new ConnectionOffers(
              effect.handoffId,
              (offer) => {
                // Sent only while the drain that asked for it runs on its session; otherwise the connection stays here.
                if (!canOfferConnections(this.#machine.state) || this.#machine.state.handoffId !== effect.handoffId) return false;
                this.#feed({ type: 'connOffer', offer });
                return true;
              },
              started + effect.deadlineMs * 0.5,
            )
          : undefined;
        this.#offers = offers;
        this.#startHook(async (signal) => {
          const deadline = Date.now() + effect.deadlineMs;
          const context: DrainContext = {
            cutWork: effect.cutWork,
            progress: (progress) => {
              if (!signal.aborted) this.#feed({ type: 'drainProgress', progress });
            },
            ...(offers ? { offers } : {}),
          };
          const report = drainable.drain(deadline, signal, effect.drainGraceMs, context);
          crashPoint('incumbent:inside-drain');
          const r = await report;
          // Every ConnOffer goes before Drained: wait for the supervisor to hold each descriptor.
          const settled = offers ? await offers.settle(Math.min(deadline, started + effect.deadlineMs * 0.6), signal) : { sent: 0, cut: 0 };
          if (settled.sent > 0) crashPoint('incumbent:offered-connections');
          return { type: 'drainDone', openConnsRemaining: r.openConnsRemaining + settled.cut, acceptClosed: r.acceptClosed, workCut: r.workCut ?? 0, connsOffered: settled.sent };
        }, (error) => ({ type: 'drainFailed', error }));
        return;
      }
      case 'startSeal': {
        const { drainable } = this.#options;
        this.#startHook(async (signal) => {
          const report = drainable.seal(signal, (completed, total) => {
            this.#feed({ type: 'sealProgress', completed, total });
          });
          crashPoint('incumbent:inside-seal');
          const { revisions, fingerprint, state } = await report;
          if (state && state.length > FieldLimits.stateMax) {
            throw new CoreError(CoreErrorCode.InvalidArgument, `the state to hand over is ${state.length} bytes, above the limit of ${FieldLimits.stateMax} (PROTOCOL.md §6, "Handover state"): hand over less — what is large belongs in the data directory; this incumbent serves on`);
          }
          return { type: 'sealDone', report: { revisions, fingerprint }, state: state ?? null };
        }, (error) => ({ type: 'sealFailed', error }));
        return;
      }
      case 'releaseLock':
        this.#lock?.release();
        crashPoint('incumbent:after-release');
        this.#feed({ type: 'lockReleased' });
        return;
      case 'resume':
        void this.#resume(effect.reacquireLock);
        return;
      case 'spawnHolder': {
        const spawned = spawnHolder(effect, this.#options.listenerFds?.() ?? []);
        holderChannel.publish({ pid: process.pid, holderPid: 'pid' in spawned ? spawned.pid : null, argv: effect.argv, error: 'error' in spawned ? spawned.error : null });
        this.#channel?.send({ type: 'HolderSpawned', pid: 'pid' in spawned ? spawned.pid : null, error: 'error' in spawned ? spawned.error : '' });
        return;
      }
      case 'reload':
        void this.#reload(effect.request); // never rejects
        return;
      case 'exit':
        this.#machine.stopTimers();
        this.#resolveExit({ code: effect.code, reason: effect.reason });
        return;
      default:
        assertNever(effect, 'effect');
    }
  }

  #startHook(run: (signal: AbortSignal) => Promise<IncumbentEvent>, onError: (message: string) => IncumbentEvent): void {
    const controller = new AbortController();
    const done = (async () => {
      let event: IncumbentEvent;
      try {
        event = await run(controller.signal);
      } catch (error) {
        event = onError(messageOf(error));
      }
      this.#feed(event);
    })();
    this.#hook = { controller, done };
  }

  /**
   * Runs a Reload. Its progress and outcome go to the session open when they are sent, if
   * Reload is in force on it (never to one opened, say, only to ask for a listener holder);
   * otherwise they are dropped (the diagnostics channel still has them). A step every
   * {@link RELOAD_KEEPALIVE_MS} tells the supervisor the reload still runs. Never rejects:
   * whatever happens, the daemon serves on.
   */
  async #reload(request: Reload): Promise<void> {
    const { requestId, target, name } = request;
    const started = Date.now();
    const publish = (phase: string, detail: string, extra: object = {}): void => {
      reloadChannel.publish({ pid: process.pid, requestId, target, name, phase, detail, ...extra });
    };
    const send = (message: ReloadProgress | ReloadDone): void => {
      const { session, agreed } = this.#machine.state;
      if (session !== 'established' || !hasCapability(agreed, 'Reload')) return;
      try {
        this.#channel?.send(message);
      } catch (error) {
        publish('unsent', `${message.type} could not be sent: ${messageOf(error)}`);
      }
    };
    const progress = (step: ReloadStep): void => {
      publish(step.phase, step.detail);
      send({ type: 'ReloadProgress', requestId, phase: progressPhase(step.phase), detail: progressDetail(step.detail) });
    };
    publish('started', request.source);
    const keepAlive = setInterval(() => {
      progress({ phase: 'working', detail: `still reloading (${Math.round((Date.now() - started) / 1000)} s)` });
    }, RELOAD_KEEPALIVE_MS);
    keepAlive.unref();
    let answer: Omit<ReloadDone, 'type' | 'requestId'>;
    try {
      answer = this.#options.reloader
        ? await this.#options.reloader(request, progress)
        : { outcome: 'failed', version: '', error: 'this daemon cannot reload anything in place', durationMs: 0, cutCalls: 0 };
    } catch (error) {
      answer = { outcome: 'failed', version: '', error: progressDetail(`the reload failed: ${messageOf(error)}`), durationMs: Date.now() - started, cutCalls: 0 };
    } finally {
      clearInterval(keepAlive);
    }
    publish('done', answer.outcome, answer);
    send({ type: 'ReloadDone', requestId, ...answer });
  }

  async #resume(reacquireLock: boolean): Promise<void> {
    const hook = this.#hook;
    this.#hook = undefined;
    if (hook) {
      hook.controller.abort(new CoreError(CoreErrorCode.Aborted, 'the handoff was abandoned'));
      await hook.done;
    }
    try {
      if (reacquireLock && this.#lock !== null && this.#lock.state !== 'held') {
        try {
          this.#lock = await DataDirLock.acquire(this.#lock.dataDir, { waitMs: this.#options.lockRetryMs ?? 3_000 });
        } catch (error) {
          const taken = error instanceof CoreError && error.code === CoreErrorCode.LockHeld;
          this.#feed({ type: 'resumeFailed', error: messageOf(error), lockTaken: taken });
          return;
        }
      }
      await this.#options.drainable.resumeAfterAbort();
      // Serving again: the connections offered to the successor are read here again, their unread bytes first.
      this.#offers?.resume();
      this.#offers = undefined;
      this.#feed({ type: 'resumed' });
    } catch (error) {
      this.#feed({ type: 'resumeFailed', error: messageOf(error), lockTaken: false });
    }
  }
}
