/**
 * The configured health check of a daemon: an HTTP GET of a loopback URL (healthy when it
 * answers the expected status, or any status below 400), or a shell command (healthy when it
 * exits 0; it is given the daemon's pid in `HANDOFF_DAEMON_PID`). The supervisor runs it
 * during a new version's probation, and once after each commit for the handoff's answer.
 */
import type { HealthCheck } from '@handoff/supervisor';
import type { Config } from './config.js';
import { probe, runShell } from './hooks.js';

/** The check `health` describes; `cwd` is where a command runs (the configuration's directory). */
export function healthCheck(health: NonNullable<Config['health']>, cwd: string): HealthCheck {
  const { url, command, expectStatus, timeoutMs } = health;
  if (url !== null) {
    return async () => {
      const r = await probe(url, timeoutMs);
      if (r.status === null) return { ok: false, detail: `GET ${url}: ${r.error ?? 'no answer'}` };
      const ok = expectStatus === null ? r.status < 400 : r.status === expectStatus;
      return { ok, detail: `GET ${url} answered ${r.status}${ok ? '' : ` (expected ${expectStatus ?? 'below 400'})`}` };
    };
  }
  const shell = command ?? 'true';
  return async (pid) => {
    const r = await runShell(shell, { HANDOFF_DAEMON_PID: String(pid) }, timeoutMs, cwd);
    const last = r.output.trim().split('\n').at(-1) ?? '';
    return { ok: r.ok, detail: r.ok ? `${shell} exited 0` : `${shell} ${r.code === null ? `did not finish within ${timeoutMs} ms` : `exited ${r.code}`}${last ? `: ${last.slice(0, 200)}` : ''}` };
  };
}
