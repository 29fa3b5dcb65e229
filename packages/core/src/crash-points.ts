/**
 * Crash points for fault-injection tests: named places in the supervisor, incumbent and
 * successor code paths. Inert unless `HANDOFF_CRASH_POINT` names the point; then the
 * process writes `HANDOFF_CRASH_MARKER` (a file path) and kills itself with SIGKILL, or
 * with SIGSTOP when `HANDOFF_CRASH_SIGNAL=SIGSTOP` (a hang). One-shot: if the marker
 * exists, the point is disarmed, so a restarted process or a later successor goes on.
 */
import { existsSync, writeFileSync } from 'node:fs';

/** Environment variables that arm a crash point. */
export const CrashEnv = {
  Point: 'HANDOFF_CRASH_POINT',
  Marker: 'HANDOFF_CRASH_MARKER',
  Signal: 'HANDOFF_CRASH_SIGNAL',
} as const;

/** Kills this process at `name` when armed; does nothing otherwise. */
export function crashPoint(name: string): void {
  const env = process.env;
  if (env[CrashEnv.Point] !== name) return;
  const marker = env[CrashEnv.Marker];
  if (!marker || existsSync(marker)) return;
  const signal = env[CrashEnv.Signal] === 'SIGSTOP' ? 'SIGSTOP' : 'SIGKILL';
  writeFileSync(marker, `${name} ${process.pid} ${signal}\n`);
  process.kill(process.pid, signal);
}
