/** The operator's shell hooks (pre_start, pre_handoff, post_stop) and the health probe. */
import { execFile } from 'node:child_process';
import { request } from 'node:http';

/** The outcome of a hook: its exit, and the tail of its output. */
export interface HookResult {
  readonly ok: boolean;
  readonly output: string;
  readonly code: number | null;
}

/**
 * Runs `command` with `/bin/sh -c` in `cwd` (the configuration's directory), `env` set over
 * this process's environment, bounded by `timeoutMs`. Never throws: a hook that cannot even be started (say `spawn E2BIG`) is a
 * failed hook (code null) whose output says why.
 */
export function runShell(command: string, env: Record<string, string>, timeoutMs: number, cwd?: string): Promise<HookResult> {
  const cannotRun = (error: unknown): HookResult => ({ ok: false, output: `cannot run the hook with /bin/sh: ${(error as Error).message}`, code: null });
  return new Promise((resolve) => {
    try {
      execFile('/bin/sh', ['-c', command], { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 1024 * 1024, cwd }, (error, stdout, stderr) => {
        const output = `${stdout}${stderr}`.slice(-64 * 1024);
        // A spawn error (ENOENT, EACCES, ...) comes here with a string code and no output.
        if (error && typeof error.code === 'string' && output === '') {
          resolve(cannotRun(error));
          return;
        }
        resolve({ ok: error === null, output, code: error ? (typeof error.code === 'number' ? error.code : null) : 0 });
      });
    } catch (error) {
      // Thrown at once when the process cannot be created at all (E2BIG, EAGAIN).
      resolve(cannotRun(error));
    }
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
