/**
 * `@handoff/testkit`: the fault-injection harness — crash points (armed in `@handoff/core`),
 * fixtures that run a supervisor and a daemon in a temp directory, a load driver with a
 * ledger of acknowledged writes, and checks of the promises.
 */
export { Cluster, TEST_TIMEOUTS, kvDaemon, processesWithEnv, startCluster } from './cluster.js';
export type { ClusterOptions } from './cluster.js';
export { LoadDriver, verifyLedger } from './load.js';
export type { ErrorCounts, LoadOptions, LoadReport, RequestResult, Role } from './load.js';
export { checkPromises } from './checks.js';
export { waitUntil } from './wait.js';
export type { WaitOptions } from './wait.js';
export { runCrashScenario } from './scenario.js';
export type { CrashScenario, CrashScenarioResult } from './scenario.js';
export type { CheckOptions } from './checks.js';
export { CrashEnv, crashPoint } from '@handoff/core';
