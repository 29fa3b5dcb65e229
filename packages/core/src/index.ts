/**
 * `@handoff/core`: what a daemon embeds to be handed off without dropping a connection or
 * losing a write. See the package README and PROTOCOL.md of `@handoff/protocol`.
 */
export * from './errors.js';
export { detectRole, SpawnEnv, LISTEN_FDS_START } from './env.js';
export type { DetectedRole, SpawnTiming } from './env.js';
export { InheritedListener, InheritedListeners, DEFAULT_BACKLOG } from './listeners.js';
export { DataDirLock, LOCK_FILE, PID_FILE } from './lock.js';
export type { AcquireOptions, LockProbe, LockState } from './lock.js';
export { Channel } from './channel.js';
export type { ChannelEvents } from './channel.js';
export { answers as controlSocketAnswers, bindControlSocket } from './control-socket.js';
export type { BoundControlSocket } from './control-socket.js';
export { Incumbent, DAEMON_CAPABILITIES } from './incumbent.js';
export type { Drainable, DrainReport, IncumbentExit, IncumbentOptions, StateSnapshot } from './incumbent.js';
export { Successor, HandshookSuccessor, BegunSuccessor } from './successor.js';
export type { Readiness, SuccessorOptions } from './successor.js';
export { HttpDrainer } from './http-drain.js';
export type { HttpDrainOptions, HttpDrainReport } from './http-drain.js';
export { runDaemon } from './daemon.js';
export type { DaemonOptions, ListenAddress, OpenContext } from './daemon.js';
export { MachineDriver } from './machine-driver.js';
export type { DriverStep, TimeoutEvent } from './machine-driver.js';
export { crashPoint, CrashEnv } from './crash-points.js';
