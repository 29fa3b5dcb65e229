/**
 * `@handoff/supervisor/internal`: process plumbing shared with the binary, the testkit and the
 * benchmark. Not a public API: it may change in any release.
 */
export { isAlive, spawnWithListenPid, stopProcess, waitForDeath } from './processes.js';
