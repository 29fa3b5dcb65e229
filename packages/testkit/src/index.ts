/**
 * `@handoff/testkit`: the fault-injection harness — a fixture that runs the real
 * `handoff-supervisor` binary with a daemon of your choice, crash points (armed through the
 * environment), a load driver with a ledger of acknowledged writes, and checks of the
 * promises.
 */
export { Cluster, TEST_TIMEOUTS, processesWithEnv, startCluster } from './cluster.js';
export type { ClusterOptions, ClusterPaths, Health, Reply } from './cluster.js';
export { LoadDriver, verifyLedger } from './load.js';
export type { ErrorCounts, LoadOptions, LoadReport, RequestResult, Role } from './load.js';
export { checkPromises } from './checks.js';
export type { CheckOptions } from './checks.js';
export { waitForValue, waitUntil } from './wait.js';
export type { WaitOptions } from './wait.js';
export { NotifySocket } from './notify-socket.js';
export type { NotifyDatagram } from './notify-socket.js';
export { runCrashScenario } from './scenario.js';
export type { CrashScenario, CrashScenarioResult } from './scenario.js';
export { CrashEnv } from '@handoff/core';
export { CONFORMANCE_TIMEOUTS, ConformanceInputError, abortConformanceRuns, resolveReferenceKv, runConformance } from './conformance/run.js';
export type { ConformanceOptions } from './conformance/run.js';
export { formatReport } from './conformance/report.js';
export type { CheckStatus, ConformanceCheck, ConformanceReport } from './conformance/report.js';
export { CHECKS as CONFORMANCE_CHECKS, KNOB_NAMES } from './conformance/scenarios.js';
export type { KnobName } from './conformance/scenarios.js';
