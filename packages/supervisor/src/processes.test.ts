import { describe, expect, it } from 'vitest';
import { bindListeners } from './listeners.js';
import { checkProgram, isAlive, processStartTime, spawnDaemon, stopProcess } from './processes.js';
import type { DaemonProgram } from '@handoff/protocol';

const node = (args: string[], env: Record<string, string> = {}): DaemonProgram => ({ command: process.execPath, args, env, cwd: null });

const PROBE = `
const fs = require('node:fs');
const fds = [3, 4, 5, 6].map((fd) => { try { return fs.fstatSync(fd).isSocket(); } catch { return false; } });
const contract = /^(LISTEN_FDS|LISTEN_FDNAMES|LISTEN_PID|HANDOFF_(RESERVE_COPIES|CONTROL_SOCKET|DATA_DIR|HEARTBEAT_MS|LIVENESS_MS|LISTEN_BACKLOGS|ROLE|SOCK_FD)|X_EXTRA)$/;
console.log(JSON.stringify({ pid: process.pid, env: Object.fromEntries(Object.entries(process.env).filter(([k]) => contract.test(k))), fds }));
`;

describe('spawnDaemon', () => {
  it('passes listeners, reserve copies and a successor channel under the spawn contract', async () => {
    const held = bindListeners([{ name: 'http', host: '127.0.0.1', port: 0 }]);
    try {
      const spawned = spawnDaemon(
        node(['-e', PROBE], { X_EXTRA: '1' }),
        { role: 'successor', listeners: held.listeners, reserveCopies: 2, controlSocket: '/run/c.sock', dataDir: '/var/lib/d', timing: { heartbeatMs: 100, livenessMs: 1000, helloMs: 10000 }, output: 'pipe' },
      );
      let out = '';
      spawned.child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      expect(spawned.channel).not.toBeNull();
      await spawned.exited;
      const seen = JSON.parse(out) as { pid: number; env: Record<string, string>; fds: boolean[] };
      expect(seen.pid).toBe(spawned.pid); // the shell that sets LISTEN_PID execs the program: same pid
      expect(seen.env).toEqual({
        LISTEN_PID: String(spawned.pid),
        LISTEN_FDS: '1',
        LISTEN_FDNAMES: 'http',
        HANDOFF_RESERVE_COPIES: '2',
        HANDOFF_CONTROL_SOCKET: '/run/c.sock',
        HANDOFF_DATA_DIR: '/var/lib/d',
        HANDOFF_HEARTBEAT_MS: '100',
        HANDOFF_LIVENESS_MS: '1000',
        HANDOFF_LISTEN_BACKLOGS: '511',
        HANDOFF_ROLE: 'successor',
        HANDOFF_SOCK_FD: '6',
        X_EXTRA: '1',
      });
      expect(seen.fds).toEqual([true, true, true, true]); // the listener, two reserve copies, the channel
    } finally {
      held.close();
    }
  }, 10_000);

  it('does not leak the supervisor own contract variables into a cold daemon', async () => {
    process.env.HANDOFF_ROLE = 'successor';
    try {
      const spawned = spawnDaemon(node(['-e', PROBE]), { role: 'cold', listeners: [], reserveCopies: 0, controlSocket: '/c', dataDir: '/d', timing: { heartbeatMs: 1, livenessMs: 2, helloMs: 3 }, output: 'pipe' });
      let out = '';
      spawned.child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      await spawned.exited;
      expect((JSON.parse(out) as { env: Record<string, string> }).env.HANDOFF_ROLE).toBeUndefined();
      expect((JSON.parse(out) as { env: Record<string, string> }).env.LISTEN_PID).toBe(String(spawned.pid));
    } finally {
      delete process.env.HANDOFF_ROLE;
    }
  });
});

describe('checkProgram', () => {
  it('names a missing command or working directory, with what to do, before anything is spawned', () => {
    expect(() => { checkProgram({ command: '/nonexistent/node', args: [], env: {}, cwd: null }); }).toThrow(expect.objectContaining({ code: 'HANDOFF_SPAWN', message: expect.stringMatching(/\/nonexistent\/node does not exist or is not executable/) }));
    expect(() => { checkProgram({ command: 'no-such-program-here', args: [], env: { PATH: '/usr/bin:/bin' }, cwd: null }); }).toThrow(/"no-such-program-here" is not an executable in PATH \(\/usr\/bin:\/bin\); give its absolute path/);
    expect(() => { checkProgram({ command: 'sh', args: [], env: {}, cwd: '/nonexistent-dir' }); }).toThrow(/working directory \/nonexistent-dir does not exist or is not a directory/);
    expect(() => { checkProgram({ command: 'sh', args: [], env: {}, cwd: '/' }); }).not.toThrow();
  });
});

describe('stopProcess', () => {
  it('SIGKILLs after the grace a process that ignores SIGTERM, and stops a frozen one', async () => {
    for (const freeze of [false, true]) {
      const spawned = spawnDaemon(node(['-e', "process.on('SIGTERM', () => {}); console.log('up'); setInterval(() => {}, 1000);"]), { role: 'cold', listeners: [], reserveCopies: 0, controlSocket: '/c', dataDir: '/d', timing: { heartbeatMs: 1, livenessMs: 2, helloMs: 3 }, output: 'pipe' });
      await new Promise((resolve) => spawned.child.stdout?.once('data', resolve));
      const pid = spawned.child.pid as number;
      expect(processStartTime(pid)).toMatch(/^\d+$/);
      if (freeze) process.kill(pid, 'SIGSTOP');
      await stopProcess(pid, 200, spawned.exited);
      expect(isAlive(pid)).toBe(false);
      expect(await spawned.exited).toMatchObject({ signal: 'SIGKILL' });
    }
  }, 10_000);
});
