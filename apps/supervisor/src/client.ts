/**
 * A client of the trigger socket: sends one request, yields each answer line.
 */
import { createConnection } from 'node:net';
import type { TriggerRequest } from './trigger.js';

/** One answer line. */
export type Answer = Record<string, unknown> & { readonly type: string };

/** What a client is told when an answer line is cut off or garbled: the supervisor most likely died while writing it. */
export const MID_ANSWER = 'the supervisor closed the connection mid-answer; did it die? check its log, then "handoffctl status"';

const isObject = (v: unknown): boolean => typeof v === 'object' && v !== null && !Array.isArray(v);
/** The fields each kind of answer line must have (another kind only needs its `type`). */
const REQUIRED: Readonly<Record<string, (a: Record<string, unknown>) => boolean>> = {
  error: (a) => typeof a.code === 'string' && typeof a.message === 'string',
  phase: (a) => typeof a.phase === 'string',
  result: (a) => typeof a.handoffId === 'string' && typeof a.committed === 'boolean' && isObject(a.timings) && typeof (a.timings as { totalMs?: unknown }).totalMs === 'number' && isObject((a.timings as { phases?: unknown }).phases),
  status: (a) => typeof a.lifecycle === 'string' && typeof a.pid === 'number',
  restarting: (a) => typeof a.supervisorPid === 'number',
  releasing: (a) => typeof a.supervisorPid === 'number',
};

/** The answer `line` holds, or null when it is not a JSON object with a `type` and that type's fields. */
export function parseAnswer(line: string): Answer | null {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  if (!isObject(value)) return null;
  const answer = value as Record<string, unknown>;
  if (typeof answer.type !== 'string') return null;
  const required = REQUIRED[answer.type];
  return required === undefined || required(answer) ? (answer as Answer) : null;
}

/**
 * Sends `request` and calls `onLine` for each answer line; resolves with all of them when
 * the supervisor closes the connection. With `timeoutMs`, fails when the connection stays
 * silent that long.
 * @throws Error when the socket cannot be reached (with what to check).
 */
export function ask(socketPath: string, request: TriggerRequest, onLine: (answer: Answer) => void = () => undefined, options: { readonly timeoutMs?: number } = {}): Promise<Answer[]> {
  return new Promise((resolve, reject) => {
    const answers: Answer[] = [];
    const socket = createConnection(socketPath);
    const fail = (error: Error): void => {
      socket.destroy();
      reject(error);
    };
    if (options.timeoutMs !== undefined) {
      const timeoutMs = options.timeoutMs;
      socket.setTimeout(timeoutMs, () => {
        socket.destroy();
        reject(new Error(`the supervisor at ${socketPath} did not answer within ${timeoutMs} ms`));
      });
    }
    let buffer = '';
    socket.setEncoding('utf8');
    let connected = false;
    socket.on('connect', () => {
      connected = true;
      socket.write(`${JSON.stringify(request)}\n`);
    });
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        if (line.trim() === '') continue;
        const answer = parseAnswer(line);
        if (answer === null) {
          fail(new Error(MID_ANSWER));
          return;
        }
        answers.push(answer);
        onLine(answer);
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // Connected, then broken (ECONNRESET): not a reachability problem.
      if (connected) {
        reject(new Error(`${MID_ANSWER} (${error.code ?? error.message})`));
        return;
      }
      const hint = error.code === 'ENOENT' || error.code === 'ECONNREFUSED' ? '; is the supervisor running? check --socket or --config' : '';
      reject(new Error(`cannot reach the supervisor at ${socketPath}: ${error.code ?? error.message}${hint}`));
    });
    socket.on('close', () => {
      // A last line without its newline was cut off.
      if (buffer.trim() !== '') fail(new Error(MID_ANSWER));
      else resolve(answers);
    });
  });
}
