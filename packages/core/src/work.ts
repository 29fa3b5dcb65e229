/**
 * Long-lived work that is not an HTTP request (background jobs, streaming responses, WebSocket
 * sessions, child processes running a user's task), tracked so that a drain can wait for it.
 *
 * A drain tells every tracked item that it started and when it must be over, cancels the
 * interruptible items at once, waits for the others until the cut time, cuts what still runs
 * then, and reports every item it cut with its last checkpoint, so that the next version can
 * offer to resume it. An operator can force a drain: every item is cut at once.
 */
import { CoreError, CoreErrorCode } from './errors.js';

/** What {@link WorkTracker.start} is told about a new item of work. */
export interface WorkInfo {
  /** What kind of work this is, such as `'job'`, `'stream'` or `'run'`: 1 to 64 characters once trimmed. */
  readonly kind: string;
  /** Human text such as `'export of 1M keys for alice'`; truncated to 256 characters. */
  readonly description?: string;
  /** When true, the item is cancelled at once when a drain starts instead of being waited for. Default false. */
  readonly interruptible?: boolean;
  /** The initial checkpoint: what a successor gets if this item is cut before it calls {@link WorkItem.checkpoint}. */
  readonly resume?: unknown;
}

/** Why a drain cut an item: it was interruptible, it still ran at the cut time, or the drain was forced. */
export type CutReason = 'interrupted' | 'deadline' | 'forced';

/**
 * An item that a drain cut, as reported to hooks and to the successor. It is plain data, so it
 * can be encoded with msgpack when its `resume` value can.
 */
export interface CutWork {
  readonly id: number;
  readonly kind: string;
  readonly description: string;
  /** When the item started, epoch ms. */
  readonly startedAt: number;
  readonly interruptible: boolean;
  readonly why: CutReason;
  /** The item's last checkpoint when the drain returned, or null when it has none (never undefined). */
  readonly resume: unknown;
  /** True if the item ended within the release grace after it was cut; false if it never released its guard in that time. */
  readonly released: boolean;
}

/** The code of {@link WorkCutError}. */
const WORK_CUT = 'HANDOFF_WORK_CUT';

/** The message of a {@link WorkCutError} for each reason. */
const CUT_MESSAGES: Readonly<Record<CutReason, string>> = {
  interrupted: 'interrupted: the drain cancels interruptible work first',
  deadline: 'cut by the drain: still running at the deadline',
  forced: 'cut at once: the operator asked not to wait (--no-drain-wait)',
};

/** The reason of a cut item's {@link WorkItem.signal}: why the drain cut it. */
export class WorkCutError extends Error {
  override readonly name: string = 'WorkCutError';
  /** Always `'HANDOFF_WORK_CUT'`. */
  readonly code = WORK_CUT;
  /** Why the item was cut. */
  readonly why: CutReason;

  /** Makes the error of a cut for `why`, with the standard message of that reason unless `message` is given. */
  constructor(why: CutReason, message: string = CUT_MESSAGES[why]) {
    super(message);
    this.why = why;
  }
}

/** The longest delay a Node timer takes (longer ones fire at once). */
const MAX_DELAY = 2 ** 31 - 1;

/** The longest kind accepted, in characters. */
const MAX_KIND = 64;
/** The longest description kept, in characters. */
const MAX_DESCRIPTION = 256;

/** What a tracker keeps of one item; the item's own {@link WorkItem} shares it. */
interface ItemState {
  description: string;
  resume: unknown;
  ended: boolean;
  drainDeadline: number | null;
  /** Set when the item is cut, never cleared. */
  cutWhy: CutReason | null;
  /** The record of the item in the running drain's report, while its release is awaited. */
  release: CutRecord | null;
  readonly cutController: AbortController;
  readonly drainingController: AbortController;
  readonly onEnd: (item: WorkItem) => void;
}

/** One entry of a drain's report, filled in until the drain returns. */
interface CutRecord {
  readonly item: WorkItem;
  readonly state: ItemState;
  readonly why: CutReason;
  /** The cuts made together, which share a release grace. */
  readonly batch: ReleaseBatch;
  released: boolean;
}

/** Items cut at the same moment: the drain waits for them to end until the batch's grace expires. */
interface ReleaseBatch {
  /** Items of the batch that have not ended yet. */
  pending: number;
  expired: boolean;
  timer: NodeJS.Timeout | null;
}

/** The state of a running drain. */
interface DrainRun {
  readonly deadline: number;
  readonly cutAt: number;
  readonly force: boolean;
  readonly releaseGraceMs: number | undefined;
  /** True once the cut time passed: items still running were cut, and items started since are cut at once. */
  cutTimeReached: boolean;
  finished: number;
  readonly cut: CutRecord[];
  /** Batches whose items are still awaited. */
  readonly batches: Set<ReleaseBatch>;
  /** True while an evaluation is queued. */
  wakeQueued: boolean;
  done: boolean;
  readonly finish: (abandoned: boolean) => void;
}

/** Truncates `text` to the description limit, without splitting a surrogate pair. */
function truncate(text: string): string {
  if (text.length <= MAX_DESCRIPTION) return text;
  const end = /[\uD800-\uDBFF]/.test(text.charAt(MAX_DESCRIPTION - 1)) ? MAX_DESCRIPTION - 1 : MAX_DESCRIPTION;
  return text.slice(0, end);
}

/** The description kept for `value`: a string truncated to 256 characters, or empty when absent (or not a string). */
function descriptionOf(value: unknown): string {
  return typeof value === 'string' ? truncate(value) : '';
}

/**
 * One item of tracked work, made by {@link WorkTracker.start}. Call {@link end} once the work is
 * over, whatever its outcome; watch {@link signal} to stop when a drain cuts it, and
 * {@link draining} to finish early, checkpoint or refuse sub-work when a drain starts.
 */
export class WorkItem {
  /** Unique within its tracker (never reused). */
  readonly id: number;
  /** The trimmed kind given to {@link WorkTracker.start}. */
  readonly kind: string;
  /** True if a drain cancels the item at once instead of waiting for it. */
  readonly interruptible: boolean;
  /** When the item started, epoch ms. */
  readonly startedAt: number;
  /** Aborted when a drain cuts the item; its reason is a {@link WorkCutError}. */
  readonly signal: AbortSignal;
  /**
   * Aborted when a drain starts, or at once if the item started during a drain; its reason is
   * `{ deadline }`, the epoch ms by which the drain must be over.
   */
  readonly draining: AbortSignal;
  readonly #state: ItemState;

  /** Items are made by {@link WorkTracker.start}; this constructor is not meant to be called directly. */
  constructor(id: number, kind: string, interruptible: boolean, startedAt: number, state: ItemState) {
    this.id = id;
    this.kind = kind;
    this.interruptible = interruptible;
    this.startedAt = startedAt;
    this.#state = state;
    this.signal = state.cutController.signal;
    this.draining = state.drainingController.signal;
  }

  /** What the work is, in human text (at most 256 characters). */
  get description(): string {
    return this.#state.description;
  }

  /** The deadline of the drain that notified this item, epoch ms, or null while no drain did. */
  get drainDeadline(): number | null {
    return this.#state.drainDeadline;
  }

  /** True once {@link end} was called. */
  get ended(): boolean {
    return this.#state.ended;
  }

  /** Replaces the item's checkpoint: what a successor gets if the item is cut. Ignored once the item ended. */
  checkpoint(resume: unknown): void {
    if (this.#state.ended) return;
    this.#state.resume = resume;
  }

  /** Replaces the item's description (truncated to 256 characters). */
  describe(description: string): void {
    this.#state.description = descriptionOf(description);
  }

  /** Ends the item and releases its guard. Idempotent: a second call does nothing. */
  end(): void {
    if (this.#state.ended) return;
    this.#state.ended = true;
    this.#state.onEnd(this);
  }
}

/** An item of work as {@link WorkTracker.items} lists it. */
export interface WorkSnapshot {
  readonly id: number;
  readonly kind: string;
  readonly description: string;
  /** When the item started, epoch ms. */
  readonly startedAt: number;
  readonly interruptible: boolean;
}

/** How much work is pending, as {@link WorkTracker.progress} reports it. */
export interface WorkProgress {
  /** Items not ended. */
  readonly pending: number;
  /** Pending items per kind, the largest count first, then by kind. */
  readonly byKind: readonly { readonly kind: string; readonly count: number }[];
  /** The oldest pending item and its age in ms, or null when nothing is pending. */
  readonly oldest: (WorkSnapshot & { readonly ageMs: number }) | null;
}

/** Options of {@link WorkTracker.drain}. */
export interface WorkDrainOptions {
  /** Epoch ms by which the drain as a whole must be over. */
  readonly deadline: number;
  /**
   * Epoch ms when items still running are cut. It defaults to the deadline minus a margin of
   * 10% of the time left, at least 200 ms and at most 2000 ms, and is never later than the deadline.
   */
  readonly cutAt?: number;
  /** Cuts every item at once, interruptible or not, with the reason `'forced'`. */
  readonly force?: boolean;
  /**
   * How long to wait for cut items to call `end()` after they were cut. It defaults to 1000 ms,
   * and it is never more than half the time left to the deadline. Items not ended by then are reported with
   * `released: false` and no longer waited for.
   */
  readonly releaseGraceMs?: number;
  /** Abandons the drain (the handoff was aborted): it stops waiting and returns at once with what it cut so far. */
  readonly signal?: AbortSignal;
}

/** What a drain did. */
export interface WorkDrainReport {
  /** Items that ended by themselves during the drain, without being cut. */
  readonly finished: number;
  /** The items the drain cut, in the order it cut them. */
  readonly cut: readonly CutWork[];
  /** True if the drain's signal aborted before it was over. */
  readonly abandoned: boolean;
  readonly durationMs: number;
}

/** Where a tracker is: accepting work, draining, after a drain returned, or after a drain was abandoned. */
type Phase = 'open' | 'draining' | 'drained' | 'abandoned';

/** Rejects a number option that is not finite (or negative, or zero, as `min` says). */
function checkNumber(name: string, value: number | undefined, min: 'any' | 'non-negative' | 'positive'): void {
  if (value === undefined) return;
  const ok = typeof value === 'number' && Number.isFinite(value) && (min === 'any' || (min === 'positive' ? value > 0 : value >= 0));
  if (!ok) {
    const wanted = min === 'any' ? 'a finite number' : min === 'positive' ? 'a positive finite number' : 'a finite number of 0 or more';
    throw new CoreError(CoreErrorCode.InvalidArgument, `WorkDrainOptions.${name} must be ${wanted}, got ${String(value)}`, { details: { field: name } });
  }
}

/**
 * Tracks long-lived work (jobs, streams, sessions, child processes) so that a drain can wait
 * for it, cut what still runs at the cut time, and report what it cut.
 */
export class WorkTracker {
  readonly #now: () => number;
  /** Pending items in start order, hence oldest first. */
  readonly #items = new Map<WorkItem, ItemState>();
  /** Pending items that were cut (they no longer hold a drain up once their release grace expired). */
  #pendingCut = 0;
  #nextId = 1;
  #phase: Phase = 'open';
  #run: DrainRun | null = null;
  /** The deadline and force of the last drain, for items started after it. */
  #lastDeadline = 0;
  #lastForce = false;
  readonly #idleWaiters = new Set<() => void>();
  /** Items started after the last drain returned, and so cut at once: reported by {@link takeLateCuts}. */
  #lateCuts: { readonly item: WorkItem; readonly state: ItemState; readonly why: CutReason }[] = [];

  /** Makes a tracker; `now` replaces `Date.now` for timestamps and deadlines (timers stay real). */
  constructor(options: { readonly now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  /**
   * Starts tracking an item of work. During a drain the item is told at once that the drain
   * runs; it is cut at once if it is interruptible, if the drain is forced or if the cut time
   * passed. After a drain returned, new items are told and cut at once, since nothing would wait
   * for them any more; after an abandoned drain they are only told, until {@link resume}.
   * Throws a CoreError `InvalidArgument` when the kind is not 1 to 64 characters once trimmed.
   */
  start(info: WorkInfo): WorkItem {
    const kind = checkKind(info.kind);
    const state: ItemState = {
      description: descriptionOf(info.description),
      resume: info.resume,
      ended: false,
      drainDeadline: null,
      cutWhy: null,
      release: null,
      cutController: new AbortController(),
      drainingController: new AbortController(),
      onEnd: this.#onEnd,
    };
    const item = new WorkItem(this.#nextId++, kind, info.interruptible === true, this.#now(), state);
    this.#items.set(item, state);
    if (this.#phase === 'open') return item;
    const run = this.#run;
    this.#notify(state, run?.deadline ?? this.#lastDeadline);
    if (run !== null) {
      if (run.force) this.#cut(run, [item], 'forced');
      else if (item.interruptible) this.#cut(run, [item], 'interrupted');
      else if (run.cutTimeReached) this.#cut(run, [item], 'deadline');
    } else if (this.#phase === 'drained') {
      const why: CutReason = this.#lastForce ? 'forced' : item.interruptible ? 'interrupted' : 'deadline';
      this.#markCut(state, why, 'cut at once: the drain already returned, so nothing waits for this work any more');
      this.#lateCuts.push({ item, state, why });
    }
    return item;
  }

  /**
   * Runs `fn` as an item of work: starts the item, ends it when `fn` settles (fulfilled or
   * rejected), and returns or rethrows what `fn` did.
   */
  async run<T>(info: WorkInfo, fn: (item: WorkItem) => Promise<T> | T): Promise<T> {
    const item = this.start(info);
    try {
      return await fn(item);
    } finally {
      item.end();
    }
  }

  /** Items not ended. */
  get size(): number {
    return this.#items.size;
  }

  /** The items not ended, oldest first. */
  items(): WorkSnapshot[] {
    return [...this.#items.keys()].map(snapshot);
  }

  /** How much work is pending: the count, the count per kind and the oldest item. */
  progress(): WorkProgress {
    const counts = new Map<string, number>();
    for (const item of this.#items.keys()) counts.set(item.kind, (counts.get(item.kind) ?? 0) + 1);
    const byKind = [...counts].map(([kind, count]) => ({ kind, count })).sort((a, b) => b.count - a.count || (a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : 0));
    const first = this.#items.keys().next();
    const oldest = first.done === true ? null : { ...snapshot(first.value), ageMs: Math.max(0, this.#now() - first.value.startedAt) };
    return { pending: this.#items.size, byKind, oldest };
  }

  /** True from the start of a drain until {@link resume}. */
  get draining(): boolean {
    return this.#phase !== 'open';
  }

  /**
   * Drains the tracked work. It tells every pending item that a drain started, cuts the
   * interruptible items at once (every item, when forced), waits for the others to end until the
   * cut time, cuts what still runs then, and waits up to the release grace for cut items to
   * end. It resolves as soon as nothing is left to wait for, by the deadline at the latest, or
   * at once when `signal` aborts. With nothing pending it resolves at once.
   * Throws a CoreError `WrongState` while another drain runs, and `InvalidArgument` for a bad option.
   */
  async drain(options: WorkDrainOptions): Promise<WorkDrainReport> {
    if (this.#run !== null) throw new CoreError(CoreErrorCode.WrongState, 'a drain is already running: wait for it to return, or abort its signal, before starting another');
    checkNumber('deadline', options.deadline, 'any');
    checkNumber('cutAt', options.cutAt, 'any');
    checkNumber('releaseGraceMs', options.releaseGraceMs, 'non-negative');
    const startedAt = this.#now();
    // A drain abandoned before it began does nothing at all.
    if (options.signal?.aborted === true) return { finished: 0, cut: [], abandoned: true, durationMs: 0 };
    const deadline = options.deadline;
    const force = options.force === true;
    this.#phase = 'draining';
    this.#lastDeadline = deadline;
    this.#lastForce = force;
    if (this.#items.size === 0) {
      this.#phase = 'drained';
      return { finished: 0, cut: [], abandoned: false, durationMs: Math.max(0, this.#now() - startedAt) };
    }
    const margin = Math.min(2_000, Math.max(200, 0.1 * (deadline - startedAt)));
    const cutAt = Math.min(options.cutAt ?? deadline - margin, deadline);

    let resolveReport: (report: WorkDrainReport) => void = () => undefined;
    const reported = new Promise<WorkDrainReport>((resolve) => {
      resolveReport = resolve;
    });
    let cutTimer: NodeJS.Timeout | null = null;
    const onAbort = (): void => {
      run.finish(true);
    };
    const run: DrainRun = {
      deadline,
      cutAt,
      force,
      releaseGraceMs: options.releaseGraceMs,
      cutTimeReached: false,
      finished: 0,
      cut: [],
      batches: new Set(),
      wakeQueued: false,
      done: false,
      finish: (abandoned) => {
        if (run.done) return;
        run.done = true;
        if (cutTimer !== null) clearTimeout(cutTimer);
        for (const batch of run.batches) {
          batch.expired = true;
          if (batch.timer !== null) clearTimeout(batch.timer);
        }
        run.batches.clear();
        options.signal?.removeEventListener('abort', onAbort);
        for (const record of run.cut) if (record.state.release === record) record.state.release = null;
        this.#run = null;
        this.#phase = abandoned ? 'abandoned' : 'drained';
        resolveReport({ finished: run.finished, cut: run.cut.map(cutWork), abandoned, durationMs: Math.max(0, this.#now() - startedAt) });
      },
    };
    this.#run = run;
    options.signal?.addEventListener('abort', onAbort, { once: true });

    const pending = [...this.#items];
    for (const [, state] of pending) {
      // A listener may abort the drain's signal: the items not told yet are then left alone.
      if (run.done) break;
      this.#notify(state, deadline);
    }
    if (force) this.#cut(run, pending.map(([item]) => item), 'forced');
    else {
      // Items an abandoned drain cut and that still run are reported again; the others wait.
      this.#cut(run, pending.filter(([item, state]) => item.interruptible || state.cutWhy !== null).map(([item]) => item), 'interrupted');
      const onCutTime = (): void => {
        cutTimer = null;
        if (run.done) return;
        run.cutTimeReached = true;
        this.#cut(run, [...this.#items].filter(([, state]) => state.cutWhy === null).map(([item]) => item), 'deadline');
        this.#wake(run);
      };
      // A cut time further away than a timer can wait is reached in several waits.
      const arm = (remaining: number): void => {
        cutTimer = setTimeout(() => {
          if (remaining > MAX_DELAY) arm(remaining - MAX_DELAY);
          else onCutTime();
        }, Math.min(remaining, MAX_DELAY)).unref();
      };
      const delay = cutAt - this.#now();
      if (run.done) return reported;
      if (delay <= 0) onCutTime();
      else arm(delay);
    }
    this.#wake(run);
    return reported;
  }

  /**
   * After an abandoned drain (the handoff rolled back), or after a drain whose handoff failed
   * later on: accepts work normally again, and new items get fresh signals. Items already told
   * keep their aborted `draining` signal. Throws a CoreError `WrongState` while a drain runs.
   */
  resume(): void {
    if (this.#run !== null) throw new CoreError(CoreErrorCode.WrongState, 'a drain is running: abort its signal before resuming work');
    this.#phase = 'open';
    this.#lateCuts = [];
  }

  /**
   * The items started after the last drain returned — cut at once, since nothing waited for
   * them any more — as cut work (`released`: whether each has ended by now), and forgets them:
   * so that they are reported, and handed over, with the drain's own cuts.
   */
  takeLateCuts(): CutWork[] {
    const late = this.#lateCuts.map(({ item, state, why }) => cutWork({ item, state, why, released: state.ended }));
    this.#lateCuts = [];
    return late;
  }

  /** Resolves when no item is pending, at once if none is. */
  whenIdle(): Promise<void> {
    if (this.#items.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.add(resolve));
  }

  /** Tells an item that a drain runs, unless it was told already. */
  #notify(state: ItemState, deadline: number): void {
    if (state.drainingController.signal.aborted) return;
    state.drainDeadline = deadline;
    state.drainingController.abort({ deadline });
  }

  /** Marks an item cut and aborts its signal, unless it was cut already. */
  #markCut(state: ItemState, why: CutReason, message?: string): void {
    if (state.cutWhy !== null) return;
    state.cutWhy = why;
    this.#pendingCut++;
    state.cutController.abort(new WorkCutError(why, message));
  }

  /**
   * Cuts `items` for the running drain: records them in its report and awaits their release for
   * the grace. Items cut before (by an abandoned drain) are recorded with their first reason
   * and not aborted again.
   */
  #cut(run: DrainRun, items: readonly WorkItem[], why: CutReason): void {
    if (run.done) return;
    const now = this.#now();
    const batch: ReleaseBatch = { pending: 0, expired: false, timer: null };
    const cut: ItemState[] = [];
    for (const item of items) {
      const state = this.#items.get(item);
      if (state === undefined || state.release !== null) continue;
      const record: CutRecord = { item, state, why: state.cutWhy ?? why, batch, released: false };
      run.cut.push(record);
      state.release = record;
      batch.pending++;
      cut.push(state);
    }
    if (cut.length === 0) return;
    // At most half the time left: the drain returns before its deadline even if a cut item never stops.
    const left = Math.max(0, run.deadline - now);
    const grace = Math.min(run.releaseGraceMs ?? 1_000, left / 2, MAX_DELAY);
    run.batches.add(batch);
    batch.timer = setTimeout(() => {
      batch.timer = null;
      batch.expired = true;
      run.batches.delete(batch);
      this.#wake(run);
    }, grace).unref();
    // Abort only once every record exists: an item may end (or start others) from its abort listener.
    for (const state of cut) this.#markCut(state, why);
  }

  readonly #onEnd = (item: WorkItem): void => {
    const state = this.#items.get(item);
    if (state === undefined) return;
    this.#items.delete(item);
    if (state.cutWhy !== null) this.#pendingCut--;
    const run = this.#run;
    if (run !== null) {
      const record = state.release;
      if (record === null) {
        if (state.cutWhy === null) run.finished++;
      } else if (!record.batch.expired) {
        record.released = true;
        if (--record.batch.pending === 0) {
          if (record.batch.timer !== null) clearTimeout(record.batch.timer);
          record.batch.timer = null;
          run.batches.delete(record.batch);
        }
      }
      state.release = null;
      this.#wake(run);
    }
    if (this.#items.size === 0 && this.#idleWaiters.size > 0) {
      const waiters = [...this.#idleWaiters];
      this.#idleWaiters.clear();
      for (const resolve of waiters) resolve();
    }
  };

  /** Queues one check of whether the drain is over (coalesced; never re-entrant). */
  #wake(run: DrainRun): void {
    if (run.wakeQueued || run.done) return;
    run.wakeQueued = true;
    queueMicrotask(() => {
      run.wakeQueued = false;
      if (run.done) return;
      // Over once no item is waited for: every pending item was cut, and no cut item's grace runs.
      if (this.#items.size - this.#pendingCut === 0 && run.batches.size === 0) run.finish(false);
    });
  }
}

/** Checks and trims a kind, or throws a CoreError `InvalidArgument`. */
function checkKind(kind: unknown): string {
  const trimmed = typeof kind === 'string' ? kind.trim() : '';
  if (trimmed.length >= 1 && trimmed.length <= MAX_KIND) return trimmed;
  const got = typeof kind !== 'string' ? `a ${kind === null ? 'null' : typeof kind}` : trimmed.length === 0 ? 'an empty string' : `${trimmed.length} characters`;
  throw new CoreError(CoreErrorCode.InvalidArgument, `WorkInfo.kind must be a string of 1 to ${MAX_KIND} characters once trimmed, got ${got}`, { details: { field: 'kind' } });
}

/** An item as plain data. */
function snapshot(item: WorkItem): WorkSnapshot {
  return { id: item.id, kind: item.kind, description: item.description, startedAt: item.startedAt, interruptible: item.interruptible };
}

/** A report entry as plain data, with the item's checkpoint as it is now. */
function cutWork(record: Pick<CutRecord, 'item' | 'state' | 'why' | 'released'>): CutWork {
  const { item } = record;
  const resume = record.state.resume;
  return { id: item.id, kind: item.kind, description: item.description, startedAt: item.startedAt, interruptible: item.interruptible, why: record.why, resume: resume === undefined ? null : resume, released: record.released };
}
