/**
 * The example WebSocket daemon (apps/ws-chat, on the `ws` package) as the daemon under test:
 * its clients' connections move to the successor at each handoff.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { DaemonCommand } from '@handoff/supervisor';
import type { ClusterPaths } from '../src/index.js';

/** The built WebSocket daemon's entry point. */
export const WS_CHAT_MAIN = join(dirname(createRequire(import.meta.url).resolve('@handoff/example-ws/package.json')), 'dist', 'main.js');

/** The WebSocket daemon for a cluster (configured without a data directory), build `v1`. */
export function wsChat(env: Readonly<Record<string, string>> = {}): (paths: ClusterPaths) => DaemonCommand {
  return () => ({ command: process.execPath, args: [WS_CHAT_MAIN], env: { WS_BUILD_ID: 'v1', ...env } });
}
