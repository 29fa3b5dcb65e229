/**
 * Named timers for a state machine's `setTimer` / `cancelTimer` effects. A timer that fires
 * after being cancelled or re-armed is dropped, so machines never see a stale timeout.
 */
export class MachineTimers<T extends string> {
  readonly #handles = new Map<T, NodeJS.Timeout>();
  readonly #fire: (timer: T, now: number) => void;

  constructor(fire: (timer: T, now: number) => void) {
    this.#fire = fire;
  }

  set(timer: T, ms: number): void {
    this.cancel(timer);
    const handle = setTimeout(() => {
      if (this.#handles.get(timer) !== handle) return;
      this.#handles.delete(timer);
      this.#fire(timer, Date.now());
    }, ms);
    this.#handles.set(timer, handle);
  }

  cancel(timer: T): void {
    const handle = this.#handles.get(timer);
    if (handle) clearTimeout(handle);
    this.#handles.delete(timer);
  }

  cancelAll(): void {
    for (const handle of this.#handles.values()) clearTimeout(handle);
    this.#handles.clear();
  }
}
