/**
 * In-flight accounting: which calls are running on which version, so that a version can be
 * drained (wait until nothing runs on it) and, at a deadline, told exactly what it would cut.
 *
 * It sits on the hot path of every call, so it is built for that: a key's calls are a
 * counter and a linked list of guards (no hashing per call, no allocation but the guard),
 * and a call that begins and ends in one synchronous stretch can be counted with no guard
 * at all ({@link InFlightTracker.hold}). A key whose calls all left is forgotten once more
 * than a few dozen idle keys accumulate, so a long life of versions leaves nothing behind.
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

/** Idle keys kept before they are swept (a key used again soon costs no Map insertion). */
const IDLE_KEYS_KEPT = 64;

/** A key's calls: how many, and the guarded ones in entry order. */
interface KeyRecord {
  count: number;
  head: Guard | null;
  tail: Guard | null;
  waiters: Set<() => void> | null;
}

class Guard implements InFlightGuard, InFlightEntry {
  readonly id: number;
  readonly label: string;
  readonly startedAt: number;
  /** Null once left. */
  record: KeyRecord | null;
  prev: Guard | null = null;
  next: Guard | null = null;
  readonly #onLeave: (guard: Guard, record: KeyRecord) => void;

  constructor(record: KeyRecord, id: number, label: string, onLeave: (guard: Guard, record: KeyRecord) => void) {
    this.record = record;
    this.id = id;
    this.label = label;
    this.startedAt = Date.now();
    this.#onLeave = onLeave;
  }

  leave(): void {
    const record = this.record;
    if (record === null) return;
    this.record = null;
    this.#onLeave(this, record);
  }

  [Symbol.dispose](): void {
    this.leave();
  }
}

/**
 * Counts calls in flight per key (a version, a connection, an epoch): `enter` when a call
 * starts, `leave` its guard when it settled, `whenIdle` to drain a key.
 */
export class InFlightTracker<K = string> {
  readonly #records = new Map<K, KeyRecord>();
  #nextId = 1;
  #total = 0;
  readonly #leaveGuard = (guard: Guard, record: KeyRecord): void => {
    if (guard.prev === null) record.head = guard.next;
    else guard.prev.next = guard.next;
    if (guard.next === null) record.tail = guard.prev;
    else guard.next.prev = guard.prev;
    guard.prev = guard.next = null;
    this.#decrement(record);
  };

  /** Counts a call in flight under `key`; `label` names it in {@link entries}. */
  enter(key: K, label = ''): InFlightGuard {
    const record = this.#record(key);
    const guard = new Guard(record, this.#nextId++, label, this.#leaveGuard);
    if (record.tail === null) record.head = guard;
    else {
      record.tail.next = guard;
      guard.prev = record.tail;
    }
    record.tail = guard;
    record.count++;
    this.#total++;
    return guard;
  }

  /**
   * Counts a call under `key` with no guard, no label and no start time: the cheapest
   * accounting, for a call that will {@link release} in the same synchronous stretch (it
   * cannot be cut, and {@link entries} does not list it).
   */
  hold(key: K): void {
    this.#record(key).count++;
    this.#total++;
  }

  /** Ends a {@link hold}. */
  release(key: K): void {
    const record = this.#records.get(key);
    if (record === undefined || record.count === 0) return;
    this.#decrement(record);
  }

  /** Calls in flight under `key`, or under every key when it is omitted (or undefined). */
  count(key?: K): number {
    if (key === undefined) return this.#total;
    return this.#records.get(key)?.count ?? 0;
  }

  /** The guarded calls in flight under `key`, oldest first (a snapshot). */
  entries(key: K): readonly InFlightEntry[] {
    const out: InFlightEntry[] = [];
    for (let guard = this.#records.get(key)?.head ?? null; guard !== null; guard = guard.next) out.push({ id: guard.id, label: guard.label, startedAt: guard.startedAt });
    return out;
  }

  /** The keys with calls in flight now. */
  keys(): readonly K[] {
    return [...this.#records].filter(([, record]) => record.count > 0).map(([key]) => key);
  }

  /**
   * Resolves `true` once nothing is in flight under `key` (at once if nothing is), or `false`
   * when `timeoutMs` passed first or `signal` aborted. Without either it waits as long as it
   * takes.
   */
  whenIdle(key: K, timeoutMs?: number, signal?: AbortSignal): Promise<boolean> {
    const record = this.#records.get(key);
    if (record === undefined || record.count === 0) return Promise.resolve(true);
    if (signal?.aborted === true) return Promise.resolve(false);
    return new Promise<boolean>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const waiters = (record.waiters ??= new Set());
      const settle = (idle: boolean): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        waiters.delete(onIdle);
        if (waiters.size === 0 && record.waiters === waiters) record.waiters = null;
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

  #record(key: K): KeyRecord {
    let record = this.#records.get(key);
    if (record === undefined) {
      if (this.#records.size >= IDLE_KEYS_KEPT) this.#sweep();
      record = { count: 0, head: null, tail: null, waiters: null };
      this.#records.set(key, record);
    }
    return record;
  }

  #decrement(record: KeyRecord): void {
    record.count--;
    this.#total--;
    if (record.count > 0 || record.waiters === null) return;
    const waiters = [...record.waiters];
    record.waiters = null;
    for (const onIdle of waiters) onIdle();
  }

  /** Forgets the keys nothing runs under. */
  #sweep(): void {
    for (const [key, record] of this.#records) if (record.count === 0 && record.waiters === null) this.#records.delete(key);
  }
}
