/**
 * `@handoff/reload`: hot reload of a plugin module inside a running Node.js daemon, with no
 * restart — each version in a worker thread of its own (or in-thread), prepare, swap, drain
 * with a deadline, cleanup, and rollback. See the package README.
 */
export { PluginError } from './errors.js';
export type { PluginErrorCode } from './errors.js';
export { InFlightTracker } from './tracker.js';
export type { InFlightEntry, InFlightGuard } from './tracker.js';
export { DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_LOAD_TIMEOUT_MS, DEFAULT_PROBATION, HotPlugin } from './plugin.js';
export type { ReloadOptions } from './plugin.js';
export type { DrainReport, HostSelfTest, PluginContract, PluginMethods, PluginMode, PluginOptions, PluginState, PluginStats, ReloadCause, ReloadProgress, ReloadReport, VersionInfo } from './types.js';
export { ReloadManager } from './manager.js';
export { DISPOSE_TIMEOUT_MS } from './version.js';
