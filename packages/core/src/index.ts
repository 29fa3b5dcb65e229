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
export type { DrainReport, Drainable, IncumbentExit, IncumbentOptions } from './incumbent.js';
export { BegunSuccessor, HandshookSuccessor, Successor } from './successor.js';
export type { Readiness, SuccessorOptions } from './successor.js';
export { HttpDrainer } from './http-drain.js';
export type { HttpDrainOptions, HttpDrainReport } from './http-drain.js';
export { DEFAULT_PRELOAD_MS, runDaemon } from './daemon.js';
export { CrashEnv } from './crash-points.js';
export type { DaemonOptions, ListenAddress, OpenContext, PreloadContext } from './daemon.js';
export { reloaderFor } from './reload.js';
export type { ConfigReloadContext, ConfigReloader, DaemonPlugins, PluginReloadReport, ReloadStep, Reloader } from './reload.js';
