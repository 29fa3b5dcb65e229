/**
 * `@handoff/supervisor`: the supervisor library. The `handoff-supervisor` binary is built on it.
 */
export { SupervisorError, SupervisorErrorCode } from './errors.js';
export { HandoffError } from '@handoff/protocol';
export { DEFAULT_PROBATION, Supervisor } from './supervisor.js';
export type { HandoffOptions, HandoffRequest, SupervisorLifecycle, SupervisorOptions, SupervisorReconfiguration, SupervisorStatus, VersionsStatus } from './supervisor.js';
export type { HealthCheck, HealthResult, ProbationPolicy } from './lifecycle.js';
export type { HandoffResult, PhaseChange } from './handoff-run.js';
export { RELOAD_SILENCE_MS } from './reload.js';
export type { ReloadResult, ReloadStepReport, ReloadTarget } from './reload.js';
export { SupervisorChannels } from './channels.js';
export type { DrainProgressInfo, SupervisorChannel, SupervisorChannelMessages } from './channels.js';
export { bindListeners, listenerAddress, listenersFromEnv, selfTestHeldListeners, startListening } from './listeners.js';
export type { HeldListener, ListenerSpec } from './listeners.js';
export type { DaemonCommand } from './processes.js';
export { daemonPresent, requestListenerHolder, servingDaemonPid } from './holder.js';
export type { HolderRequest } from './holder.js';
