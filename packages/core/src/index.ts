/**
 * `@handoff/core`: what a daemon embeds to be handed off without dropping a connection or
 * losing a write. See the package README and PROTOCOL.md of `@handoff/protocol`.
 */
export { CoreError, CoreErrorCode } from './errors.js';
export { HandoffError } from '@handoff/protocol';
export { detectRole, listenFds } from './env.js';
export type { DetectedRole, ListenFd, SpawnTiming } from './env.js';
export { DEFAULT_BACKLOG, InheritedListener, InheritedListeners } from './listeners.js';
export { DataDirLock, LOCK_FILE, PID_FILE, lockKindsHeldBy } from './lock.js';
export type { AcquireOptions, LockKind, LockProbe, LockState } from './lock.js';
export { DAEMON_CAPABILITIES, Incumbent, defaultCapabilities } from './incumbent.js';
export type { DrainContext, DrainProgressReport, DrainReport, Drainable, IncumbentExit, IncumbentOptions, SealOutcome } from './incumbent.js';
export { BegunSuccessor, HandshookSuccessor, Successor } from './successor.js';
export type { Readiness, SuccessorOptions } from './successor.js';
export { HttpDrainer } from './http-drain.js';
export { MovableConnections, canMoveConnections } from './moving.js';
export type { AdoptedConnection, MovableSpec } from './moving.js';
export type { HttpDrainOptions, HttpDrainReport } from './http-drain.js';
export { DEFAULT_PRELOAD_MS, runDaemon } from './daemon.js';
export { CrashEnv } from './crash-points.js';
export type { DaemonOptions, DrainCause, DrainEndInfo, DrainStartInfo, ListenAddress, OpenContext, PreloadContext } from './daemon.js';
export { decodeHandover, encodeHandover } from './handover.js';
export type { HandedOver } from './handover.js';
export { reloaderFor } from './reload.js';
export type { ConfigReloadContext, ConfigReloader, DaemonPlugins, PluginReloadReport, ReloadStep, Reloader } from './reload.js';
export { WorkCutError, WorkItem, WorkTracker } from './work.js';
export type { CutReason, CutWork, WorkDrainOptions, WorkDrainReport, WorkInfo, WorkProgress, WorkSnapshot } from './work.js';
