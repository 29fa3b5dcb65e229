/**
 * A daemon's last words (PROTOCOL.md section 2, `HANDOFF_FAILURE_FILE`): when the supervisor
 * names a failure file, the last few KiB the process writes to stdout and stderr — and an
 * uncaught exception's stack, which Node prints without going through them — are kept in
 * memory, and written to that file if the process exits before it serves. The supervisor then
 * shows them with the failed handoff's outcome, instead of "exit code 1".
 *
 * Armed when this package is first loaded (so a failure before `runDaemon` — a missing
 * setting, a throw at the top of the program — is caught), disarmed once the daemon serves.
 * Nothing is written to a pipe or socket: a supervisor that dies cannot break the daemon's
 * output. The variable is removed once read, so that the daemon's own children (and worker
 * threads) never write the file.
 */
import { writeFileSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';
import { FAILURE_FILE_MAX, SpawnEnv } from '@handoff/protocol';

interface Armed {
  readonly path: string;
  tail: string;
  readonly restore: () => void;
}

/** One state per process, even with two copies of this package loaded (say, ESM and CommonJS). */
const STATE = Symbol.for('@handoff/core/failure-file');
const holder = globalThis as unknown as Record<symbol, { armed: Armed | null; done: boolean } | undefined>;
const state = (holder[STATE] ??= { armed: null, done: false });

function keep(text: string): void {
  const armed = state.armed;
  if (armed) armed.tail = (armed.tail + text).slice(-FAILURE_FILE_MAX);
}

function text(chunk: unknown): string {
  if (typeof chunk === 'string') return chunk.slice(-FAILURE_FILE_MAX);
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.subarray(-FAILURE_FILE_MAX)).toString('utf8');
  return '';
}

function onUncaught(error: unknown): void {
  // The stack, then its first line again: the last line is what a short report shows.
  const e = error instanceof Error ? error : new Error(String(error));
  keep(`\n${e.stack ?? e.message}\n${`${e.name}: ${e.message}`.split('\n')[0] ?? ''}\n`);
}

function onExit(): void {
  const armed = state.armed;
  if (!armed) return;
  try {
    writeFileSync(armed.path, armed.tail, { mode: 0o600 });
  } catch {
    // The supervisor then reports the exit alone.
  }
}

/** Starts keeping the process's last output, if the supervisor asked for it (once per process, main thread only). */
export function armFailureFile(env: NodeJS.ProcessEnv = process.env): void {
  const path = env[SpawnEnv.FailureFile];
  if (state.done || !isMainThread || !path) return;
  state.done = true;
  Reflect.deleteProperty(env, SpawnEnv.FailureFile);
  const wrap = (stream: NodeJS.WriteStream): (() => void) => {
    const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
    const wrapper = (chunk: unknown, ...rest: unknown[]): boolean => {
      keep(text(chunk));
      return write(chunk, ...rest);
    };
    stream.write = wrapper;
    // Put the original back only if nobody wrapped it since (their wrapper then calls ours, which keeps nothing once disarmed).
    return () => {
      if (stream.write === wrapper) stream.write = write;
    };
  };
  const unwrapOut = wrap(process.stdout);
  const unwrapErr = wrap(process.stderr);
  process.on('uncaughtExceptionMonitor', onUncaught);
  process.on('exit', onExit);
  state.armed = {
    path,
    tail: '',
    restore: () => {
      unwrapOut();
      unwrapErr();
      process.off('uncaughtExceptionMonitor', onUncaught);
      process.off('exit', onExit);
    },
  };
}

/** The daemon serves: nothing more is kept, and nothing is written at exit. */
export function disarmFailureFile(): void {
  state.armed?.restore();
  state.armed = null;
}
