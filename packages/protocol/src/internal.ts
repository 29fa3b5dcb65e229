/**
 * `@handoff/protocol/internal`: plumbing shared by the handoff packages (`@handoff/core`,
 * `@handoff/supervisor`, the testkit). Not a public API: it may change in any release.
 */
export { MachineDriver, systemClock } from './machine-driver.js';
export type { Clock, DriverStep, MachineDriverOptions, TimeoutEvent } from './machine-driver.js';
export { assertNever, describe, messageOf } from './errors.js';
export { helloFor } from './machine.js';
export { simulateHandoff } from './simulation.js';
export type { SimCrash, SimFaults, SimOptions, SimResult, SimRole } from './simulation.js';
