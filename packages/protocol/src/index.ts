/**
 * `@handoff/protocol`: wire frames, messages, version negotiation, the three pure state
 * machines and the journal record of the handoff protocol v1. Runtime-neutral (no `node:`
 * imports). The normative specification is PROTOCOL.md beside this package.
 */
export * from './errors.js';
export * from './messages.js';
export * from './codec.js';
export * from './negotiation.js';
export * from './revisions.js';
export * from './machine.js';
export * from './supervisor-machine.js';
export * from './incumbent-machine.js';
export * from './successor-machine.js';
export * from './journal.js';
export { simulateHandoff } from './simulation.js';
export type { SimFaults, SimOptions, SimResult, SimRole } from './simulation.js';
