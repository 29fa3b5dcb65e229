/**
 * `@handoff/supervisor`: the supervisor library. The `apps/supervisor` binary is built on it.
 */
export * from './errors.js';
export { Supervisor } from './supervisor.js';
export type { HandoffRequest, HandoffResult, RestartPolicy, SupervisorLifecycle, SupervisorOptions, SupervisorStatus } from './supervisor.js';
export { bindListeners, listenersFromEnv, selfTestHeldListeners } from './listeners.js';
export type { HeldListener, ListenerSpec } from './listeners.js';
export { isAlive, processStartTime, spawnDaemon, stopProcess, waitForDeath } from './processes.js';
export type { DaemonCommand, SpawnedDaemon } from './processes.js';
export { JournalFile } from './journal-file.js';
export { openIncumbentSession } from './session.js';
export type { IncumbentSession } from './session.js';
