/**
 * The example key-value daemon as the daemon under test: the project's own tests run the
 * testkit against it (the testkit itself takes any daemon).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { DaemonCommand } from '@handoff/supervisor';
import type { ClusterPaths } from '../src/index.js';

/** The built kv daemon's entry point. */
export const KV_MAIN = join(dirname(createRequire(import.meta.url).resolve('@handoff/example-kv/package.json')), 'dist', 'main.js');

/** The kv daemon on a data directory, build `v1`, with extra environment. */
export function kvCommand(dataDir: string, env: Readonly<Record<string, string>> = {}): DaemonCommand {
  return { command: process.execPath, args: [KV_MAIN], env: { KV_DATA_DIR: dataDir, KV_BUILD_ID: 'v1', ...env } };
}

/** The kv daemon for a cluster. */
export function kv(env: Readonly<Record<string, string>> = {}): (paths: ClusterPaths) => DaemonCommand {
  return ({ dataDir }) => kvCommand(dataDir, env);
}
