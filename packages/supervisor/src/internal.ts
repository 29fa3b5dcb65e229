/**
 * `@handoff/supervisor/internal`: process plumbing shared with the testkit and the benchmark.
 * Not a public API: it may change in any release.
 */
export { checkProgram, describeExit, isAlive, processStartTime, spawnDaemon, spawnWithListenPid, stopProcess, toProgram, waitForDeath } from './processes.js';
export type { SpawnOptions, SpawnedDaemon } from './processes.js';
export { JournalFile } from './journal-file.js';
export { openIncumbentSession } from './session.js';
export type { IncumbentSession } from './session.js';
