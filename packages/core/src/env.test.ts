import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { describe, expect, it } from 'vitest';
import { detectRole, listenFds } from './env.js';

describe('detectRole', () => {
  it('is a cold start with nothing inherited when the contract is absent', () => {
    const env: NodeJS.ProcessEnv = { PATH: '/bin' };
    const role = detectRole(env);
    expect(role.role).toBe('cold');
    expect(role.listeners.names).toEqual([]);
    expect(env).toEqual({ PATH: '/bin' });
  });

  it('rejects malformed variables with what to check', () => {
    const LISTEN_PID = String(process.pid);
    expect(() => detectRole({ LISTEN_PID, LISTEN_FDS: 'two' })).toThrow(expect.objectContaining({ code: 'HANDOFF_ENV_INVALID', message: expect.stringMatching(/LISTEN_FDS="two" is not a count.*set by handoff-supervisor.*do not set them by hand/) }));
    expect(() => detectRole({ HANDOFF_ROLE: 'incumbent' })).toThrow(expect.objectContaining({ code: 'HANDOFF_ENV_INVALID' }));
    expect(() => detectRole({ HANDOFF_ROLE: 'successor' })).toThrow(/HANDOFF_SOCK_FD="" is not an fd number/);
    expect(() => detectRole({ HANDOFF_ROLE: 'successor', HANDOFF_SOCK_FD: '250' })).toThrow(/not open in this process/);
    expect(() => detectRole({ LISTEN_PID, LISTEN_FDS: '60' })).toThrow(/is fd \d+, which is not (open in this process|a socket)/);
    expect(() => detectRole({ LISTEN_PID, LISTEN_FDS: '1', LISTEN_FDNAMES: 'a:b' })).toThrow(/names 2 listeners but LISTEN_FDS=1/);
  });

  it('names the variable, its bad value, and who sets it, for every malformed variable of the contract', () => {
    const LISTEN_PID = String(process.pid);
    const cases: [NodeJS.ProcessEnv, string][] = [
      [{ HANDOFF_ROLE: 'bogus' }, 'HANDOFF_ROLE="bogus"'],
      [{ HANDOFF_ROLE: 'successor', HANDOFF_SOCK_FD: 'abc' }, 'HANDOFF_SOCK_FD="abc"'],
      [{ HANDOFF_LISTEN_BACKLOGS: 'x' }, 'HANDOFF_LISTEN_BACKLOGS="x"'],
      [{ HANDOFF_LISTEN_BACKLOGS: '511:0' }, 'HANDOFF_LISTEN_BACKLOGS="511:0"'],
      [{ HANDOFF_HEARTBEAT_MS: '-5' }, 'HANDOFF_HEARTBEAT_MS="-5"'],
      [{ HANDOFF_LIVENESS_MS: '1.5' }, 'HANDOFF_LIVENESS_MS="1.5"'],
      [{ LISTEN_PID, HANDOFF_RESERVE_COPIES: 'zz' }, 'HANDOFF_RESERVE_COPIES="zz"'],
      [{ LISTEN_PID, LISTEN_FDS: 'abc' }, 'LISTEN_FDS="abc"'],
    ];
    for (const [env, named] of cases) {
      expect(() => detectRole(env), named).toThrow(expect.objectContaining({ code: 'HANDOFF_ENV_INVALID', message: expect.stringContaining(named) }));
      expect(() => detectRole(env), named).toThrow(/set by handoff-supervisor .*: do not set them by hand$/);
    }
    // Empty is unset, as for every variable of the contract.
    expect(detectRole({ HANDOFF_CONTROL_SOCKET: '' }).controlSocket).toBeNull();
  });

  it('takes listeners only when LISTEN_PID names this process, as systemd defines it', () => {
    expect(detectRole({ LISTEN_FDS: '3', LISTEN_PID: String(process.pid + 1) }).listeners.names).toEqual([]);
    const unset: NodeJS.ProcessEnv = { LISTEN_FDS: '3', LISTEN_FDNAMES: 'a:b:c' };
    expect(listenFds(unset)).toEqual([]);
    expect(unset).toEqual({}); // consumed all the same, so that no child takes them for its own
  });

  it('consumes the variables, so a second call (or a child) sees a cold start', async () => {
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const env: NodeJS.ProcessEnv = { HANDOFF_CONTROL_SOCKET: '/run/x.sock', HANDOFF_DATA_DIR: '/var/lib/x', HANDOFF_LIVENESS_MS: '1500', HANDOFF_HEARTBEAT_MS: '250', HANDOFF_HELLO_MS: '20000', KEEP: '1' };
      const role = detectRole(env);
      expect(role).toMatchObject({ role: 'cold', controlSocket: '/run/x.sock', dataDir: '/var/lib/x', timing: { livenessMs: 1500, heartbeatMs: 250, helloMs: 20000 } });
      expect(env).toEqual({ KEEP: '1' });
      expect(detectRole(env)).toMatchObject({ controlSocket: null, dataDir: null });
    } finally {
      server.close();
    }
  });
});
