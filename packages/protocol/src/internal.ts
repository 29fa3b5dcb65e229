/**
 * `@handoff/protocol/internal`: plumbing shared by the handoff packages (`@handoff/core`,
 * `@handoff/supervisor`). Not a public API: it may change in any release.
 */
export { MachineDriver, readBeforeJudging, systemClock } from './machine-driver.js';
export type { Clock, DriverStep, MachineDriverOptions, TimeoutEvent } from './machine-driver.js';
export { assertNever, messageOf } from './errors.js';
