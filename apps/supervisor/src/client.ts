/**
 * A client of the trigger socket: sends one request, yields each answer line.
 */
import { createConnection } from 'node:net';
import type { TriggerRequest } from './trigger.js';

/** One answer line. */
export type Answer = Record<string, unknown> & { readonly type: string };

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
    if (options.timeoutMs !== undefined) {
      const timeoutMs = options.timeoutMs;
      socket.setTimeout(timeoutMs, () => {
        socket.destroy();
        reject(new Error(`the supervisor at ${socketPath} did not answer within ${timeoutMs} ms`));
      });
    }
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      socket.write(`${JSON.stringify(request)}\n`);
    });
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        if (line.trim() === '') continue;
        const answer = JSON.parse(line) as Answer;
        answers.push(answer);
        onLine(answer);
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      const hint = error.code === 'ENOENT' || error.code === 'ECONNREFUSED' ? '; is the supervisor running? check --socket or --config' : '';
      reject(new Error(`cannot reach the supervisor at ${socketPath}: ${error.code ?? error.message}${hint}`));
    });
    socket.on('close', () => {
      resolve(answers);
    });
  });
}
