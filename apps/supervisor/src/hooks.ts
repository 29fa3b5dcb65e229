/** The operator's shell hooks (pre_start, pre_handoff, post_stop) and the health probe. */
import { execFile } from 'node:child_process';
import { request } from 'node:http';

/** The outcome of a hook: its exit, and the tail of its output. */
export interface HookResult {
  readonly ok: boolean;
  readonly output: string;
  readonly code: number | null;
}

/** Runs `command` with `/bin/sh -c`, `env` set over this process's environment, bounded by `timeoutMs`. */
export function runShell(command: string, env: Record<string, string>, timeoutMs: number): Promise<HookResult> {
  return new Promise((resolve) => {
    execFile('/bin/sh', ['-c', command], { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 1024 * 1024 }, (error, stdout, stderr) => {
      const output = `${stdout}${stderr}`.slice(-64 * 1024);
      resolve({ ok: error === null, output, code: error ? (typeof error.code === 'number' ? error.code : null) : 0 });
    });
  });
}

/** One HTTP GET of the health URL: ok when it answers below 400 within `timeoutMs`. */
export function probe(url: string, timeoutMs: number): Promise<{ ok: boolean; status: number | null; error?: string }> {
  return new Promise((resolve) => {
    const req = request(url, { timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      res.on('end', () => {
        resolve({ ok: (res.statusCode ?? 0) < 400, status: res.statusCode ?? null });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e) => {
      resolve({ ok: false, status: null, error: e.message });
    });
    req.end();
  });
}
