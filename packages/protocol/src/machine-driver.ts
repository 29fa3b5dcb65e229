/**
 * Runs one of the pure state machines: feeds events in order (an event raised while effects
 * run is queued, never handled re-entrantly), carries out its timer effects on a
 * {@link Clock} that feeds `timeout` events back, and hands every other effect to the caller.
 *
 * Every driver in the product uses it — incumbent, successor, handoff run, supervisor
 * lifecycle — with the {@link systemClock}; the simulation behind the model-based test uses
 * it with a virtual clock, so the model checks the same queuing the product runs.
 */
import type { HandoffProtocolError } from './errors.js';
import type { CancelTimer, SetTimer, Transition } from './machine.js';

/** How a driver reads time and arms timers. */
export interface Clock {
  /** Milliseconds since the epoch (or since the start of a simulation). */
  now(): number;
  /** Calls `fire` once after `ms`; returns a handle for {@link clearTimer}. `name` is the machine's name of the timer. */
  setTimer(ms: number, fire: () => void, name?: string): unknown;
  /** Disarms a timer; a no-op for one that fired or was cleared. */
  clearTimer(handle: unknown): void;
}

/** The runtime's own timers and wall clock (every JavaScript runtime has `setTimeout`). */
export const systemClock: Clock = (() => {
  const timers = globalThis as unknown as { setTimeout(fire: () => void, ms: number): unknown; clearTimeout(handle: unknown): void };
  return {
    now: () => Date.now(),
    setTimer: (ms, fire) => timers.setTimeout(fire, ms),
    clearTimer: (handle) => {
      timers.clearTimeout(handle);
    },
  };
})();

/** The timeout event every machine takes. */
export interface TimeoutEvent<T extends string> {
  readonly type: 'timeout';
  readonly timer: T;
  readonly now: number;
}

/** What the driver reports after each transition. */
export interface DriverStep<S, E> {
  readonly before: S;
  readonly after: S;
  readonly event: E;
  readonly violation: HandoffProtocolError | undefined;
}

/** Options of a {@link MachineDriver}. */
export interface MachineDriverOptions<S, E, X extends { readonly type: string }, T extends string> {
  readonly initial: S;
  readonly transition: (state: S, event: E) => Transition<S, X>;
  /** Carries out an effect other than a timer's. */
  readonly onEffect: (effect: Exclude<X, SetTimer<T> | CancelTimer<T>>) => void;
  /** Called after each transition, before its effects run. */
  readonly onStep?: (step: DriverStep<S, E>) => void;
  /** Default {@link systemClock}. */
  readonly clock?: Clock;
  /**
   * Asked when a timer is due, before the machine sees it: a number of milliseconds postpones
   * the timeout (the timer stays armed, and is asked about again when it is next due), null
   * lets it through. `lateMs`: how long after its due time the timer ran (the process's own
   * event loop was blocked); `postponedMs`: how long this arming was postponed so far.
   */
  readonly postpone?: (timer: T, info: { readonly lateMs: number; readonly postponedMs: number }) => number | null;
}

/**
 * A {@link MachineDriverOptions.postpone} for a process whose own event loop may have been
 * blocked: every timer is postponed once by a millisecond, so that what arrived on its sockets
 * meanwhile (a peer's heartbeats, queued while this process could not read) is read before the
 * timeout is judged — the timers of an event loop run before its sockets are read. Without
 * it, a daemon blocked for about the liveness timeout takes its live supervisor for dead.
 */
export function readBeforeJudging(): (timer: string, info: { readonly lateMs: number; readonly postponedMs: number }) => number | null {
  return (_timer, info) => (info.postponedMs === 0 ? 1 : null);
}

/** Drives a machine whose timers are named `T`. */
export class MachineDriver<S, E extends { readonly type: string }, X extends { readonly type: string }, T extends string> {
  #state: S;
  readonly #options: MachineDriverOptions<S, E, X, T>;
  readonly #clock: Clock;
  readonly #queue: E[] = [];
  #running = false;
  readonly #timers = new Map<T, unknown>();

  constructor(options: MachineDriverOptions<S, E, X, T>) {
    this.#state = options.initial;
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
  }

  get state(): S {
    return this.#state;
  }

  /** The driver's clock (for events that carry the time). */
  get clock(): Clock {
    return this.#clock;
  }

  /** Feeds an event; handled now, or after the events and effects already under way. */
  feed(event: E): void {
    this.#queue.push(event);
    if (this.#running) return;
    this.#running = true;
    try {
      for (let next = this.#queue.shift(); next; next = this.#queue.shift()) {
        const before = this.#state;
        const r = this.#options.transition(before, next);
        this.#state = r.state;
        this.#options.onStep?.({ before, after: r.state, event: next, violation: r.violation });
        for (const effect of r.effects) this.#run(effect);
      }
    } finally {
      this.#running = false;
    }
  }

  /** Cancels every timer (the machine is done, or its process is). */
  stopTimers(): void {
    for (const handle of this.#timers.values()) this.#clock.clearTimer(handle);
    this.#timers.clear();
  }

  #arm(timer: T, ms: number, postponedMs: number): void {
    const due = this.#clock.now() + ms;
    const handle = this.#clock.setTimer(
      ms,
      () => {
        // A timer cancelled or re-armed meanwhile is stale: the machine never sees it.
        if (this.#timers.get(timer) !== handle) return;
        this.#timers.delete(timer);
        const later = this.#options.postpone?.(timer, { lateMs: Math.max(0, this.#clock.now() - due), postponedMs }) ?? null;
        if (later !== null) {
          this.#arm(timer, later, postponedMs + later);
          return;
        }
        this.feed({ type: 'timeout', timer, now: this.#clock.now() } satisfies TimeoutEvent<T> as unknown as E);
      },
      timer,
    );
    this.#timers.set(timer, handle);
  }

  #run(effect: X): void {
    if (effect.type === 'setTimer') {
      const { timer, ms } = effect as unknown as SetTimer<T>;
      this.#cancel(timer);
      this.#arm(timer, ms, 0);
    } else if (effect.type === 'cancelTimer') {
      this.#cancel((effect as unknown as CancelTimer<T>).timer);
    } else {
      this.#options.onEffect(effect as Exclude<X, SetTimer<T> | CancelTimer<T>>);
    }
  }

  #cancel(timer: T): void {
    if (!this.#timers.has(timer)) return;
    this.#clock.clearTimer(this.#timers.get(timer));
    this.#timers.delete(timer);
  }
}
