/**
 * A daemon without a data directory as the daemon under test (test/fixtures/stateless-daemon.js):
 * its handoffs overlap (PROTOCOL.md section 7). Run it with `startCluster({ stateless: true })`.
 */
import { fileURLToPath } from 'node:url';
import type { DaemonCommand } from '@handoff/supervisor';
import type { ClusterPaths } from '../src/index.js';

export const STATELESS = fileURLToPath(new URL('./fixtures/stateless-daemon.js', import.meta.url));

/** The stateless fixture daemon, build `v1`, with extra environment. */
export function stateless(env: Readonly<Record<string, string>> = {}): (paths: ClusterPaths) => DaemonCommand {
  return () => ({ command: process.execPath, args: [STATELESS], env: { STATELESS_BUILD_ID: 'v1', ...env } });
}
