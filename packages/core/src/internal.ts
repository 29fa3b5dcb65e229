/**
 * `@handoff/core/internal`: plumbing shared with `@handoff/supervisor` and the testkit. Not a
 * public API: it may change in any release.
 */
export { Channel } from './channel.js';
export type { ChannelEvents } from './channel.js';
export { answers as controlSocketAnswers, bindControlSocket } from './control-socket.js';
export type { BoundControlSocket } from './control-socket.js';
export { crashPoint } from './crash-points.js';
export { SHELL, spawnWithListenPid } from './holder.js';
