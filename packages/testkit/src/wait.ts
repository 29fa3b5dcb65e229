/** Waiting for a condition with a deadline: the one poll loop of the tests and tools. */

/** Options of {@link waitUntil}. */
export interface WaitOptions {
  /** Poll interval. Default 20 ms. */
  readonly everyMs?: number;
  /** Appended to the timeout error, e.g. the output of the processes involved. */
  readonly context?: () => string;
}

/**
 * Polls `predicate` every `everyMs` until it holds; throws, naming `what` (and the
 * context), after `timeoutMs`. An error thrown by `predicate` ends the wait at once.
 */
export async function waitUntil(what: string, predicate: () => boolean | Promise<boolean>, timeoutMs = 20_000, options: WaitOptions = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) {
      const context = options.context?.() ?? '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${context ? `\n${context}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.everyMs ?? 20));
  }
}

/**
 * Polls `probe` until it returns a value other than null, undefined or false, and returns
 * it; throws like {@link waitUntil} after `timeoutMs`.
 */
export async function waitForValue<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 20_000, options: WaitOptions = {}): Promise<NonNullable<T>> {
  let value: T | undefined;
  await waitUntil(
    what,
    async () => {
      value = await probe();
      return value !== undefined && value !== null && value !== false;
    },
    timeoutMs,
    options,
  );
  return value as NonNullable<T>;
}
