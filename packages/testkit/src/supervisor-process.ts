#!/usr/bin/env node
/**
 * A supervisor process for tests: its listeners come from a holder (`LISTEN_FDS`, the test
 * process), its configuration from `HANDOFF_TESTKIT_CONFIG` (JSON), and its commands over
 * the IPC channel: `{ id, cmd: 'handoff' | 'status' | 'stop', request? }` answered with
 * `{ id, ok, value | error }`. Diagnostics events are forwarded as `{ event }`.
 */
import { subscribe } from 'node:diagnostics_channel';
import { readdirSync } from 'node:fs';
import { Supervisor, listenersFromEnv } from '@handoff/supervisor';
import type { HandoffRequest, SupervisorOptions } from '@handoff/supervisor';

type Config = Omit<SupervisorOptions, 'listeners'>;
type Command = { readonly id: number; readonly cmd: 'handoff' | 'status' | 'stop' | 'resources'; readonly request?: HandoffRequest; readonly graceMs?: number };

const send = (message: unknown): void => {
  if (process.connected) process.send?.(message);
};
const config = JSON.parse(process.env.HANDOFF_TESTKIT_CONFIG ?? '{}') as Config;
delete process.env.HANDOFF_TESTKIT_CONFIG;
const listeners = listenersFromEnv();
subscribe('handoff:supervisor:phase', (message) => {
  send({ event: { type: 'phase', ...(message as object) } });
});
subscribe('handoff:supervisor:event', (message) => {
  send({ event: { type: 'event', ...(message as object) } });
});

const supervisor = new Supervisor({ ...config, listeners });
process.on('message', (raw) => {
  const command = raw as Command;
  const reply = (work: Promise<unknown>): void => {
    work.then(
      (value) => {
        send({ id: command.id, ok: true, value });
      },
      (error: unknown) => {
        const e = error as { code?: string; message?: string };
        send({ id: command.id, ok: false, error: { code: e.code ?? 'ERROR', message: e.message ?? String(error) } });
      },
    );
  };
  switch (command.cmd) {
    case 'handoff':
      reply(supervisor.performHandoff(command.request ?? {}));
      return;
    case 'status':
      reply(Promise.resolve(supervisor.status()));
      return;
    case 'resources': {
      // After a full GC when --expose-gc is on, so heap figures compare across handoffs.
      (globalThis as { gc?: () => void }).gc?.();
      reply(Promise.resolve({ fds: readdirSync('/proc/self/fd').length, ...process.memoryUsage() }));
      return;
    }
    case 'stop':
      reply(supervisor.stop(command.graceMs).then(() => {
        setImmediate(() => process.exit(0));
      }));
      return;
  }
});
process.on('disconnect', () => {
  // The test process went away: leave the daemons to the fixture's cleanup.
  process.exit(0);
});

try {
  await supervisor.start();
  send({ ready: supervisor.status() });
} catch (error) {
  const e = error as { code?: string; message?: string };
  send({ startFailed: { code: e.code ?? 'ERROR', message: e.message ?? String(error) } });
  process.exitCode = 1;
  process.disconnect();
}
