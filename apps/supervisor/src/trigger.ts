/**
 * The trigger socket: a Unix socket, mode 0600, in a private directory. One request per
 * connection, one line of JSON (or plain words: `upgrade [command args...]`, `status`,
 * `stop`, `reload`, `restart-supervisor`), at most 64 KiB, within 5 s; answers are JSON lines. Garbage gets an error line,
 * never a crash.
 *
 *   {"cmd":"upgrade","command":"/usr/bin/node","args":["v2.js"],"env":{"K":"V"},"probation":60000,"wait":true}
 *                                                                  -> phase lines, a result, then probation lines
 *   {"cmd":"upgrade","drainTimeout":45000,"cutWork":false}         -> as upgrade, with drain lines while the incumbent drains
 *   {"cmd":"reload"}                                               -> a reloaded line, then as upgrade
 *   {"cmd":"reload","plugin":"validate","source":"/abs/v2.js"}     -> reloadStep lines, then a reloadDone line
 *   {"cmd":"reload","daemonConfig":true}                           -> reloadStep lines, then a reloadDone line
 *   {"cmd":"status"}                                               -> one status line
 *   {"cmd":"stop"}                                                 -> {"type":"stopping"}
 *   {"cmd":"restart-supervisor"}                                   -> {"type":"restarting",...}
 *   {"cmd":"release"}                                              -> {"type":"releasing",...}
 */
import { chmodSync, existsSync, lstatSync, unlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { dirname } from 'node:path';
import { checkRuntimeDir } from './runtime-dir.js';
import { controlSocketAnswers } from '@handoff/core/internal';
import { ErrorCode, pluginNameProblem } from '@handoff/protocol';

/** A request on the trigger socket. */
export type TriggerRequest =
  /** A handoff: `command`, `args` replace the current ones; `env` entries are set over the current environment. */
  /** `probation` sets the new version's probation window (ms) for this handoff; with `wait`, the answer ends with the probation's outcome. */
  | ({ readonly cmd: 'upgrade'; readonly command?: string; readonly args?: readonly string[]; readonly env?: Readonly<Record<string, string>>; readonly probation?: number; readonly wait?: boolean } & DrainRequest)
  /** Re-read the configuration file; if valid, apply it and hand off to its daemon settings. */
  | ({ readonly cmd: 'reload'; readonly wait?: boolean } & DrainRequest)
  /**
   * Reload in place, no handoff (PROTOCOL.md section 6, "Reload"): one plugin of the daemon
   * (`source`: an absolute path to load instead of its own file), or its own configuration.
   */
  | { readonly cmd: 'reload'; readonly plugin: string; readonly source?: string }
  | { readonly cmd: 'reload'; readonly daemonConfig: true }
  | { readonly cmd: 'status' }
  | { readonly cmd: 'stop' }
  /** Replace the supervisor process by a fresh one (the code now on disk); the daemon serves on. */
  | { readonly cmd: 'restart-supervisor' }
  /** Exit, keeper included, leaving the daemon serving (and holding the listeners): `--force` takes over from there. */
  | { readonly cmd: 'release' };

/** How a request that hands off asks the incumbent to drain. */
export interface DrainRequest {
  /** How long the incumbent may drain in this handoff (ms), instead of `[timeouts] drain`. */
  readonly drainTimeout?: number;
  /** True: the incumbent cuts its tracked long-lived work at once instead of waiting for it. */
  readonly cutWork?: boolean;
}

/** Largest `drainTimeout` of a request (a day, in ms). */
export const MAX_DRAIN_TIMEOUT_MS = 86_400_000;

/** What an environment variable's name may be, in a request's `env`. */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Largest request line. */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Time a client has to send its request line. */
export const REQUEST_TIMEOUT_MS = 5_000;

/** What the server does with a request: write answer lines with `send`, then resolve. */
export type TriggerHandler = (request: TriggerRequest, send: (line: Record<string, unknown>) => void) => Promise<void>;

/** Parses one request line; returns an error message instead of throwing. */
export function parseRequest(line: string): TriggerRequest | string {
  const text = line.trim();
  if (text === '') return 'empty request; send one line: {"cmd":"status"}, {"cmd":"upgrade"} or {"cmd":"stop"}';
  if (!text.startsWith('{')) {
    const [word, ...rest] = text.split(/\s+/);
    if (word === 'reload') {
      if (rest.length === 0) return { cmd: 'reload' };
      return rest.length === 1 && rest[0] ? checkPlugin({ cmd: 'reload', plugin: rest[0] }) : '"reload" takes at most one argument: a plugin name';
    }
    if (word === 'status' || word === 'stop' || word === 'restart-supervisor' || word === 'release') return rest.length === 0 ? { cmd: word } : `"${word}" takes no arguments`;
    if (word === 'upgrade' || word === 'handoff') {
      const [command, ...args] = rest;
      return command ? { cmd: 'upgrade', command, args } : { cmd: 'upgrade' };
    }
    return `unknown request ${JSON.stringify(text.slice(0, 80))}; expected status, stop, reload, restart-supervisor, release, or upgrade [command args...]`;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return 'the request is not valid JSON';
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return 'the request must be a JSON object with a "cmd"';
  const r = raw as Record<string, unknown>;
  if (r.cmd === 'status' || r.cmd === 'stop' || r.cmd === 'restart-supervisor' || r.cmd === 'release') return { cmd: r.cmd };
  if (r.wait !== undefined && typeof r.wait !== 'boolean') return '"wait" must be true or false';
  const drain = parseDrain(r);
  if (typeof drain === 'string') return drain;
  if (r.cmd === 'reload' && (r.plugin !== undefined || r.daemonConfig !== undefined || r.source !== undefined)) {
    const handoffOnly = (['wait', 'drainTimeout', 'cutWork'] as const).find((key) => r[key] !== undefined);
    if (handoffOnly !== undefined) return `"${handoffOnly}" is for a reload that hands off, not with "plugin", "source" or "daemonConfig"`;
  }
  if (r.cmd === 'reload' && r.daemonConfig !== undefined) {
    if (r.daemonConfig !== true || r.plugin !== undefined || r.source !== undefined) return '"daemonConfig" must be true, without "plugin" or "source"';
    return { cmd: 'reload', daemonConfig: true };
  }
  if (r.cmd === 'reload' && r.plugin !== undefined) {
    if (typeof r.plugin !== 'string') return '"plugin" must be a plugin name';
    if (r.source !== undefined && (typeof r.source !== 'string' || !r.source.startsWith('/'))) return '"source" must be an absolute path to the module to load';
    return checkPlugin({ cmd: 'reload', plugin: r.plugin, ...(typeof r.source === 'string' ? { source: r.source } : {}) });
  }
  if (r.cmd === 'reload' && r.source !== undefined) return '"source" needs a "plugin" to load it for';
  if (r.cmd === 'reload') return { cmd: 'reload', ...(r.wait === true ? { wait: true } : {}), ...drain };
  if (r.cmd === 'upgrade') {
    if (r.command !== undefined && (typeof r.command !== 'string' || r.command === '')) return '"command" must be a non-empty string';
    if (r.args !== undefined && (!Array.isArray(r.args) || !r.args.every((a) => typeof a === 'string'))) return '"args" must be an array of strings';
    const env = r.env;
    if (env !== undefined && (typeof env !== 'object' || env === null || Array.isArray(env) || !Object.entries(env).every(([k, v]) => ENV_NAME.test(k) && typeof v === 'string'))) {
      return '"env" must be an object of variable names to string values';
    }
    if (r.probation !== undefined && (typeof r.probation !== 'number' || !Number.isInteger(r.probation) || r.probation < 0 || r.probation > 86_400_000)) {
      return '"probation" must be a number of milliseconds from 0 to 86400000';
    }
    return {
      cmd: 'upgrade',
      ...(typeof r.command === 'string' ? { command: r.command } : {}),
      ...(Array.isArray(r.args) ? { args: r.args } : {}),
      ...(env !== undefined ? { env: env as Record<string, string> } : {}),
      ...(typeof r.probation === 'number' ? { probation: r.probation } : {}),
      ...(r.wait === true ? { wait: true } : {}),
      ...drain,
    };
  }
  return `unknown cmd ${JSON.stringify(r.cmd)}; expected "status", "upgrade", "reload", "stop", "restart-supervisor" or "release"`;
}

/** The `drainTimeout` and `cutWork` of a request, or what is wrong with them. */
function parseDrain(r: Record<string, unknown>): DrainRequest | string {
  const { drainTimeout, cutWork } = r;
  if (drainTimeout !== undefined && (typeof drainTimeout !== 'number' || !Number.isInteger(drainTimeout) || drainTimeout < 1 || drainTimeout > MAX_DRAIN_TIMEOUT_MS)) {
    return `"drainTimeout" must be a number of milliseconds from 1 to ${MAX_DRAIN_TIMEOUT_MS}`;
  }
  if (cutWork !== undefined && typeof cutWork !== 'boolean') return '"cutWork" must be true or false';
  return { ...(typeof drainTimeout === 'number' ? { drainTimeout } : {}), ...(cutWork === true ? { cutWork: true } : {}) };
}

/** A plugin reload with a well-formed name, or what is wrong with it. */
function checkPlugin(request: { readonly cmd: 'reload'; readonly plugin: string; readonly source?: string }): TriggerRequest | string {
  return pluginNameProblem(request.plugin) ?? request;
}

/** A bound trigger socket. */
export interface TriggerServer {
  readonly server: Server;
  close(): Promise<void>;
}

/**
 * Binds the trigger socket (creating its directory with mode 0700) and serves requests.
 * @throws Error when another process serves the path.
 */
export async function bindTrigger(path: string, handle: TriggerHandler): Promise<TriggerServer> {
  const dir = dirname(path);
  checkRuntimeDir(dir, "the trigger socket's directory");
  if (existsSync(path) && lstatSync(path).isSocket()) {
    if (await controlSocketAnswers(path)) throw new Error(`the trigger socket ${path} is served by a live process; is another supervisor running?`);
    unlinkSync(path);
  }
  const server = createServer((socket) => {
    serveConnection(socket, handle);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(path, 0o600);
  return {
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      }),
  };
}

function serveConnection(socket: Socket, handle: TriggerHandler): void {
  socket.on('error', () => undefined);
  socket.setEncoding('utf8');
  const send = (line: Record<string, unknown>): void => {
    if (!socket.destroyed) socket.write(`${JSON.stringify(line)}\n`);
  };
  const fail = (code: string, message: string): void => {
    send({ type: 'error', code, message });
    socket.end();
  };
  let buffer = '';
  let started = false;
  const timer = setTimeout(() => {
    if (!started) fail(ErrorCode.BadRequest, `no complete request line within ${REQUEST_TIMEOUT_MS} ms`);
  }, REQUEST_TIMEOUT_MS);
  socket.on('data', (chunk: string) => {
    if (started) return;
    buffer += chunk;
    const newline = buffer.indexOf('\n');
    if (newline < 0) {
      if (Buffer.byteLength(buffer) > MAX_REQUEST_BYTES) {
        started = true;
        clearTimeout(timer);
        fail(ErrorCode.BadRequest, `request longer than ${MAX_REQUEST_BYTES} bytes`);
      }
      return;
    }
    started = true;
    clearTimeout(timer);
    const request = parseRequest(buffer.slice(0, newline));
    if (typeof request === 'string') {
      fail(ErrorCode.BadRequest, request);
      return;
    }
    handle(request, send).then(
      () => socket.end(),
      (error: unknown) => {
        const e = error as { code?: string; message?: string };
        fail(e.code ?? ErrorCode.Internal, e.message ?? String(error));
      },
    );
  });
  socket.on('end', () => {
    if (!started) {
      started = true;
      clearTimeout(timer);
      const request = buffer === '' ? 'empty request' : parseRequest(buffer);
      if (typeof request === 'string') fail(ErrorCode.BadRequest, request);
      else
        handle(request, send).then(
          () => socket.end(),
          (error: unknown) => {
            fail(ErrorCode.Internal, (error as Error).message);
          },
        );
    }
  });
}
