/**
 * A daemon's last words (PROTOCOL.md section 2, `HANDOFF_FAILURE_FILE`): when the supervisor
 * names a failure file, the last few KiB the process writes to stdout and stderr — and an
 * uncaught exception's stack, which Node prints without going through them — are kept in
 * memory, and written to that file if the process exits before it serves. The supervisor then
 * shows them with the failed handoff's outcome, instead of "exit code 1".
 *
 * Armed when this package is first imported (so a failure before `runDaemon` — a missing
 * setting, a throw at the top of the program — is caught), disarmed once the daemon serves.
 * Nothing is written to a pipe or socket: a supervisor that dies cannot break the daemon's
 * output.
 */
import { writeFileSync } from 'node:fs';
import { FAILURE_FILE_MAX, SpawnEnv } from '@handoff/protocol';

let armed: { readonly path: string; tail: string; readonly restore: () => void } | null = null;

function keep(text: string): void {
  if (!armed) return;
  armed.tail = (armed.tail + text).slice(-FAILURE_FILE_MAX);
}

function onUncaught(error: unknown): void {
  keep(`\n${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
}

function onExit(): void {
  if (!armed) return;
  try {
    writeFileSync(armed.path, armed.tail, { mode: 0o600 });
  } catch {
    // The supervisor then reports the exit alone.
  }
}

/** Starts keeping the process's last output, if the supervisor asked for it (idempotent). */
export function armFailureFile(env: NodeJS.ProcessEnv = process.env): void {
  const path = env[SpawnEnv.FailureFile];
  if (armed || !path) return;
  const wrap = (stream: NodeJS.WriteStream): (() => void) => {
    const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
    stream.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
      keep(typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) || chunk instanceof Uint8Array ? Buffer.from(chunk).toString('utf8') : '');
      return write(chunk, ...rest);
    });
    return () => {
      stream.write = write;
    };
  };
  const unwrapOut = wrap(process.stdout);
  const unwrapErr = wrap(process.stderr);
  process.on('uncaughtExceptionMonitor', onUncaught);
  process.on('exit', onExit);
  armed = {
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
  armed?.restore();
  armed = null;
}
