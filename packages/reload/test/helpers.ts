/**
 * Test helpers: plugin modules written to a temp dir of their own (removed after each test),
 * and a kill switch for waits (a deadline, never a sleep).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HotPlugin, PluginContract, PluginMethods, ReloadProgress } from '../src/index.js';

/** A temp dir for plugin modules, and the plugins to close after the test. */
export class Sandbox {
  readonly dir = mkdtempSync(join(tmpdir(), 'handoff-reload-'));
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- any contract
  readonly #plugins: HotPlugin<any>[] = [];

  /** Writes `source` as `<name>.mjs` and returns its absolute path. */
  write(name: string, source: string): string {
    const file = join(this.dir, `${name}.mjs`);
    writeFileSync(file, source);
    return file;
  }

  /** Closes the plugin at cleanup (whatever the test did). */
  track<M extends PluginContract<M>>(plugin: HotPlugin<M>): HotPlugin<M> {
    this.#plugins.push(plugin);
    return plugin;
  }

  /** Closes every tracked plugin (cutting whatever still runs) and removes the dir. */
  async cleanup(): Promise<void> {
    try {
      await Promise.all(this.#plugins.map((plugin) => plugin.close(1_000)));
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

/**
 * A plugin module that answers with its label: `apply(x)` at once, `later(x)` after a turn
 * of the worker's event loop, `fail(message)` throws, `hang()` never settles, `gate(x)`
 * answers once the test opens gate `x` ({@link Gates}). Its bugs on
 * demand: `apply('__exit')` calls process.exit(1), `apply('__throw')` throws from a timer
 * (an uncaught exception).
 */
export function plugin(label: string, extra = ''): string {
  return `
export const version = ${JSON.stringify(label)};
export function apply(x) {
  if (x === '__exit') process.exit(1);
  if (x === '__throw') setTimeout(() => { throw new Error('async bug'); });
  return { version, x };
}
export async function later(x) { await new Promise((resolve) => setTimeout(resolve, 0)); return { version, x }; }
export function fail(message) { throw new RangeError(message); }
export function hang() { return new Promise(() => {}); }
export function gate(x) {
  return new Promise((resolve) => {
    const channel = new BroadcastChannel(${JSON.stringify(GATES)});
    channel.onmessage = ({ data }) => {
      if (data !== 'open ' + x) return;
      channel.close();
      resolve({ version, x });
    };
    channel.postMessage('waiting ' + x);
  });
}
${extra}
`;
}

export interface Answer {
  readonly version: string;
  readonly x: unknown;
}

export interface Methods extends PluginMethods {
  apply(x: unknown): Answer;
  later(x: unknown): Promise<Answer>;
  fail(message: string): never;
  hang(): Promise<never>;
  gate(x: string): Promise<Answer>;
}

export const METHODS = ['apply', 'later', 'fail', 'hang', 'gate'] as const;

const GATES = 'handoff-reload-test-gates';

/**
 * The test's side of `gate(x)` calls, in any thread of this process (a BroadcastChannel):
 * `waiting(x)` resolves once a `gate(x)` call is running, `open(x)` lets it answer.
 */
export class Gates {
  readonly #channel = new BroadcastChannel(GATES);
  readonly #waiting = new Set<string>();
  readonly #listeners = new Map<string, () => void>();

  constructor() {
    this.#channel.onmessage = (event: MessageEvent) => {
      const data = String(event.data);
      if (!data.startsWith('waiting ')) return;
      const x = data.slice('waiting '.length);
      this.#waiting.add(x);
      this.#listeners.get(x)?.();
    };
  }

  waiting(x: string): Promise<void> {
    if (this.#waiting.has(x)) return Promise.resolve();
    return new Promise((resolve) => this.#listeners.set(x, resolve));
  }

  open(x: string): void {
    this.#channel.postMessage(`open ${x}`);
  }

  close(): void {
    this.#channel.close();
  }
}

/** Resolves with `promise`, or rejects after `ms` (a kill switch for a wait that should end). */
export async function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => {
          reject(new Error(`${what}: not done within ${ms} ms`));
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The error a promise rejects with (fails the test if it resolves). */
export async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

/** Records a reload's progress; `swapped` resolves at its 'swapped' event. */
export function watchReload(): { readonly onProgress: (p: ReloadProgress) => void; readonly swapped: Promise<void>; readonly events: ReloadProgress[] } {
  const events: ReloadProgress[] = [];
  let onSwap: () => void = () => undefined;
  const swapped = new Promise<void>((resolve) => (onSwap = resolve));
  return {
    events,
    swapped,
    onProgress: (p) => {
      events.push(p);
      if (p.phase === 'swapped') onSwap();
    },
  };
}
