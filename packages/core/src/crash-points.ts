/**
 * Crash points for fault-injection tests: named places in the supervisor, incumbent and
 * successor code paths. Inert unless armed:
 *
 * - `HANDOFF_CRASH_POINT=<name>` arms a point for the process's lifetime, or
 * - `HANDOFF_CRASH_FILE=<path>` names a file whose content (`<name>` or `<name> SIGSTOP`)
 *   arms a point; the file is read at each point, so a test can arm and disarm at run time.
 *
 * An armed point writes `HANDOFF_CRASH_MARKER` (a file path; default `<crash file>.fired`)
 * and kills the process with SIGKILL (or stops it with SIGSTOP: a hang). One-shot: while the
 * marker exists the point is disarmed, so a restarted process or a later successor goes on.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/** Environment variables that arm crash points. */
export const CrashEnv = {
  Point: 'HANDOFF_CRASH_POINT',
  File: 'HANDOFF_CRASH_FILE',
  Marker: 'HANDOFF_CRASH_MARKER',
  Signal: 'HANDOFF_CRASH_SIGNAL',
} as const;

function armed(): { point: string; signal: 'SIGKILL' | 'SIGSTOP'; marker: string } | null {
  const env = process.env;
  const file = env[CrashEnv.File];
  const fixed = env[CrashEnv.Point];
  if (fixed) {
    const marker = env[CrashEnv.Marker] ?? (file ? `${file}.fired` : '');
    return marker ? { point: fixed, signal: env[CrashEnv.Signal] === 'SIGSTOP' ? 'SIGSTOP' : 'SIGKILL', marker } : null;
  }
  if (!file) return null;
  let text: string;
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
  const [point, signal] = text.split(/\s+/);
  if (!point) return null;
  return { point, signal: signal === 'SIGSTOP' ? 'SIGSTOP' : 'SIGKILL', marker: env[CrashEnv.Marker] ?? `${file}.fired` };
}

/** Kills (or stops) this process at `name` when armed; does nothing otherwise. */
export function crashPoint(name: string): void {
  if (!process.env[CrashEnv.Point] && !process.env[CrashEnv.File]) return;
  const arm = armed();
  if (arm?.point !== name || existsSync(arm.marker)) return;
  writeFileSync(arm.marker, `${name} ${process.pid} ${arm.signal}\n`);
  process.kill(process.pid, arm.signal);
}
