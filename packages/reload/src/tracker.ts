/**
 * In-flight accounting: which calls are running on which version, so that a version can be
 * drained (wait until nothing runs on it) and, at a deadline, told exactly what it would cut.
 *
 * It sits on the hot path of every call (in-thread plugin calls cost about as much as a
 * plain function call otherwise), so entering and leaving are a counter and one Map entry;
 * a key whose last call left is forgotten, so a long life of versions leaves nothing behind.
 */

/** A call's place in an {@link InFlightTracker}: leave it once the call settled. */
export interface InFlightGuard {
  /** Unique within its tracker (never reused). */
  readonly id: number;
  /** The label given to {@link InFlightTracker.enter}. */
  readonly label: string;
  /** When the call entered, epoch ms. */
  readonly startedAt: number;
  /** Ends this call's accounting. Idempotent: a second call does nothing. */
  leave(): void;
  /** The same as {@link leave}, for `using guard = tracker.enter(key)`. */
  [Symbol.dispose](): void;
}

/** One call in flight, as {@link InFlightTracker.entries} lists it. */
export interface InFlightEntry {
  readonly id: number;
  /** What the caller named it (the method, for plugin calls). */
  readonly label: string;
  /** When it entered, epoch ms. */
  readonly startedAt: number;
}

type Keyed<K> = Map<number, Guard<K>>;

class Guard<K> implements InFlightGuard, InFlightEntry {
  readonly id: number;
  readonly label: string;
  readonly startedAt: number;
  readonly #tracker: InFlightTracker<K>;
  readonly #key: K;
  #left = false;

  constructor(tracker: InFlightTracker<K>, key: K, id: number, label: string) {
    this.#tracker = tracker;
    this.#key = key;
    this.id = id;
    this.label = label;
    this.startedAt = Date.now();
  }

  leave(): void {
    if (this.#left) return;
    this.#left = true;
    leaveGuard(this.#tracker, this.#key, this.id);
  }

  [Symbol.dispose](): void {
    this.leave();
  }
}

// Set by InFlightTracker's static block: lets a guard leave without exposing a public method.
let leaveGuard: <K>(tracker: InFlightTracker<K>, key: K, id: number) => void;

/**
 * Counts calls in flight per key (a version, a connection, an epoch): `enter` when a call
 * starts, `leave` its guard when it settled, `whenIdle` to drain a key.
 */
export class InFlightTracker<K = string> {
  readonly #byKey = new Map<K, Keyed<K>>();
  readonly #idleWaiters = new Map<K, Set<() => void>>();
  #nextId = 1;
  #total = 0;

  static {
    leaveGuard = <K>(tracker: InFlightTracker<K>, key: K, id: number): void => {
      tracker.#leave(key, id);
    };
  }

  /** Counts a call in flight under `key`; `label` names it in {@link entries}. */
  enter(key: K, label = ''): InFlightGuard {
    const guard = new Guard(this, key, this.#nextId++, label);
    let keyed = this.#byKey.get(key);
    if (keyed === undefined) {
      keyed = new Map();
      this.#byKey.set(key, keyed);
    }
    keyed.set(guard.id, guard);
    this.#total++;
    return guard;
  }

  /** Calls in flight under `key`, or under every key when it is omitted (or undefined). */
  count(key?: K): number {
    if (key === undefined) return this.#total;
    return this.#byKey.get(key)?.size ?? 0;
  }

  /** The calls in flight under `key`, oldest first (a snapshot). */
  entries(key: K): readonly InFlightEntry[] {
    const keyed = this.#byKey.get(key);
    if (keyed === undefined) return [];
    return [...keyed.values()].map(({ id, label, startedAt }) => ({ id, label, startedAt }));
  }

  /** The keys with calls in flight now. */
  keys(): readonly K[] {
    return [...this.#byKey.keys()];
  }

  /**
   * Resolves `true` once nothing is in flight under `key` (at once if nothing is), or `false`
   * when `timeoutMs` passed first or `signal` aborted. Without either it waits as long as it
   * takes.
   */
  whenIdle(key: K, timeoutMs?: number, signal?: AbortSignal): Promise<boolean> {
    if (this.count(key) === 0) return Promise.resolve(true);
    if (signal?.aborted === true) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const waiters = this.#idleWaiters.get(key) ?? new Set<() => void>();
      this.#idleWaiters.set(key, waiters);
      const settle = (idle: boolean): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        waiters.delete(onIdle);
        if (waiters.size === 0 && this.#idleWaiters.get(key) === waiters) this.#idleWaiters.delete(key);
        resolve(idle);
      };
      const onIdle = (): void => {
        settle(true);
      };
      const onAbort = (): void => {
        settle(false);
      };
      waiters.add(onIdle);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined) timer = setTimeout(onAbort, Math.max(0, timeoutMs));
    });
  }

  #leave(key: K, id: number): void {
    const keyed = this.#byKey.get(key);
    if (keyed?.delete(id) !== true) return;
    this.#total--;
    if (keyed.size > 0) return;
    this.#byKey.delete(key);
    const waiters = this.#idleWaiters.get(key);
    if (waiters === undefined) return;
    this.#idleWaiters.delete(key);
    for (const onIdle of [...waiters]) onIdle();
  }
}
