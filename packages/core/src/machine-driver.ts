/**
 * Runs one of the protocol's pure state machines: feeds events in order (an event raised
 * while effects run is queued, never handled re-entrantly), carries out its timer effects
 * with real timers that feed `timeout` events back, and hands every other effect to the
 * caller. Shared by the incumbent, successor and supervisor drivers.
 */
import type { CancelTimer, HandoffProtocolError, SetTimer, Transition } from '@handoff/protocol';

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

/** Drives a machine whose timers are named `T`. */
export class MachineDriver<S, E extends { readonly type: string }, X extends { readonly type: string }, T extends string> {
  #state: S;
  readonly #transition: (state: S, event: E) => Transition<S, X>;
  readonly #onEffect: (effect: Exclude<X, SetTimer<T> | CancelTimer<T>>) => void;
  readonly #onStep: ((step: DriverStep<S, E>) => void) | undefined;
  readonly #queue: E[] = [];
  #running = false;
  readonly #timers = new Map<T, NodeJS.Timeout>();

  constructor(options: {
    readonly initial: S;
    readonly transition: (state: S, event: E) => Transition<S, X>;
    /** Carries out an effect other than a timer's. */
    readonly onEffect: (effect: Exclude<X, SetTimer<T> | CancelTimer<T>>) => void;
    /** Called after each transition, before its effects run. */
    readonly onStep?: (step: DriverStep<S, E>) => void;
  }) {
    this.#state = options.initial;
    this.#transition = options.transition;
    this.#onEffect = options.onEffect;
    this.#onStep = options.onStep;
  }

  get state(): S {
    return this.#state;
  }

  /** Feeds an event; handled now, or after the events and effects already under way. */
  feed(event: E): void {
    this.#queue.push(event);
    if (this.#running) return;
    this.#running = true;
    try {
      for (let next = this.#queue.shift(); next; next = this.#queue.shift()) {
        const before = this.#state;
        const r = this.#transition(before, next);
        this.#state = r.state;
        this.#onStep?.({ before, after: r.state, event: next, violation: r.violation });
        for (const effect of r.effects) this.#run(effect);
      }
    } finally {
      this.#running = false;
    }
  }

  /** Cancels every timer (the machine is done, or its process is). */
  stopTimers(): void {
    for (const handle of this.#timers.values()) clearTimeout(handle);
    this.#timers.clear();
  }

  #run(effect: X): void {
    if (effect.type === 'setTimer') {
      const { timer, ms } = effect as unknown as SetTimer<T>;
      this.#cancel(timer);
      const handle = setTimeout(() => {
        // A timer cancelled or re-armed meanwhile is stale: the machine never sees it.
        if (this.#timers.get(timer) !== handle) return;
        this.#timers.delete(timer);
        this.feed({ type: 'timeout', timer, now: Date.now() } satisfies TimeoutEvent<T> as unknown as E);
      }, ms);
      this.#timers.set(timer, handle);
    } else if (effect.type === 'cancelTimer') {
      this.#cancel((effect as unknown as CancelTimer<T>).timer);
    } else {
      this.#onEffect(effect as Exclude<X, SetTimer<T> | CancelTimer<T>>);
    }
  }

  #cancel(timer: T): void {
    const handle = this.#timers.get(timer);
    if (handle) clearTimeout(handle);
    this.#timers.delete(timer);
  }
}
