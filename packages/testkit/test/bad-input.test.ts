/**
 * Bad input to the real binaries and the kv daemon: each gets one line naming the culprit and
 * what to do — no stack trace, no pid file left behind, nothing left running.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { ask } from '@handoff/supervisor-cli/client';
import { waitForValue, waitUntil } from '../src/index.js';
import { Workspace, runToExit, showOnFailure } from './bin.js';
import { KV_MAIN } from './kv.js';

/** The lines of `output` that are not JSON log lines. */
function said(output: string): string[] {
  return output.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'));
}

/** Exactly one line was said, and no stack trace. */
function expectOneLine(output: string, line: RegExp): void {
  expect(said(output), output).toEqual([expect.stringMatching(line)]);
  expect(output).not.toMatch(/\n\s+at /);
}

/** After a failed start: no pid file, no process of the workspace left. */
async function expectNothingLeft(ws: Workspace): Promise<void> {
  expect(existsSync(join(ws.runtimeDir, 'supervisor.pid'))).toBe(false);
  await waitUntil('every process of the workspace to be gone', () => ws.processes().length === 0, 10_000, { context: () => `left: ${ws.processes().join(', ')}` });
}

/** Starts the binary on `file` in the foreground, then with --daemon: each exits 1 with the one line `line`, leaving nothing. Returns the detached run's output. */
async function expectRefusedBothWays(ws: Workspace, file: string, line: RegExp): Promise<string> {
  let output = '';
  for (const args of [['--config', file], ['--config', file, '--daemon']]) {
    const sup = ws.start(args);
    expect(await sup.exited).toBe(1);
    expectOneLine(sup.output, line);
    await expectNothingLeft(ws);
    output = sup.output;
  }
  return output;
}

describe('a listener address that is not on this machine', () => {
  it('says so (EADDRNOTAVAIL) and to use an address of a local interface, in one line, exit 1, in the foreground and with --daemon', async () => {
    await using ws = new Workspace();
    const file = ws.config();
    // 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
    writeFileSync(file, readFileSync(file, 'utf8').replace('address = "127.0.0.1:0"', 'address = "192.0.2.1:80"'));
    const line = /^handoff-supervisor: .*listener "http": cannot bind 192\.0\.2\.1:80 \(EADDRNOTAVAIL\): 192\.0\.2\.1 is not an address of this machine; use the address of a local interface/;
    const detached = await expectRefusedBothWays(ws, file, line);
    expect(detached).toMatch(/^handoff-supervisor: the detached supervisor \(pid \d+\) exited: listener "http"/);
  });
});

describe('a pid file or runtime directory that cannot be made', () => {
  it('a pid file in a directory that does not exist: one line naming it and what to do, exit 1, in the foreground and with --daemon', async () => {
    await using ws = new Workspace();
    const file = ws.config('\n[supervisor]\npid_file = "nonexistent/x.pid"\n');
    const line = new RegExp(`cannot create the pid file ${ws.dir}/nonexistent/x\\.pid \\(ENOENT\\): its directory ${ws.dir}/nonexistent does not exist; create that directory, or set \\[supervisor\\] pid_file to a path in a writable one`);
    await expectRefusedBothWays(ws, file, line);
    expect(ws.daemons()).toEqual([]);
  });

  it('a runtime directory whose parent is a file: one line naming it, exit 2', async () => {
    await using ws = new Workspace();
    const file = ws.config();
    writeFileSync(file, readFileSync(file, 'utf8').replace('runtime_dir = "run"', 'runtime_dir = "handoff.toml/run"'));
    const sup = ws.start(['--config', file]);
    expect(await sup.exited).toBe(2);
    expectOneLine(sup.output, new RegExp(`^handoff-supervisor: the trigger socket's directory ${ws.dir}/handoff\\.toml/run cannot be examined \\(ENOTDIR\\)`));
    await expectNothingLeft(ws);
  });
});

describe('a hook command too long to run', () => {
  it('is refused at validation with the file, line and key, and what to do: exit 2, no pid file, nothing started', async () => {
    await using ws = new Workspace();
    for (const key of ['pre_start', 'pre_handoff']) {
      // 200 KB: more than Linux takes in one argument (128 KiB), which once gave "internal error: spawn E2BIG".
      const file = ws.config(`\n[hooks]\n${key} = "${'true;'.repeat(40_000)}"\n`);
      const sup = ws.start(['--config', file]);
      expect(await sup.exited, key).toBe(2);
      expectOneLine(sup.output, new RegExp(`^handoff-supervisor: .*handoff\\.toml:\\d+: \\[hooks\\] ${key}: the command is 200000 bytes, more than the 65536 a hook may have .*; put the script in a file and run that`));
      await expectNothingLeft(ws);
    }
  });
});

describe('the kv daemon given a spawn contract it cannot use', () => {
  it('a malformed HANDOFF_* variable: one line naming it, its value and that handoff-supervisor sets it; exit 2', async () => {
    await using ws = new Workspace();
    for (const [name, value] of [['HANDOFF_ROLE', 'bogus'], ['HANDOFF_LISTEN_BACKLOGS', 'x'], ['HANDOFF_HEARTBEAT_MS', '-5'], ['HANDOFF_LIVENESS_MS', 'abc']] as const) {
      const r = await runToExit([process.execPath, KV_MAIN], { KV_DATA_DIR: ws.dataDir, KV_PORT: '0', [name]: value });
      expect(r.code, `${name}: ${r.stdout}${r.stderr}`).toBe(2);
      expect(r.stdout).toBe('');
      expectOneLine(r.stderr, new RegExp(`^handoff-kv: ${name}="${value}" .*set by handoff-supervisor .*: do not set them by hand$`));
    }
  });

  const hasPerl = spawnSync('perl', ['-MSocket', '-MPOSIX', '-e', '1']).status === 0;
  it.skipIf(!hasPerl)('an inherited TCP socket that is not bound: refuses in one line instead of serving on a random port; exit 2', async () => {
    await using ws = new Workspace();
    // A socket never bound at fd 3, passed as a listener (perl: Node cannot make one).
    const unbound = 'use Socket; use POSIX; $^F = 255; socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!"; POSIX::dup2(fileno($s), 3) or die "dup2: $!"; $ENV{LISTEN_PID} = $$; exec @ARGV or die "exec: $!";';
    const r = await runToExit(['perl', '-e', unbound, process.execPath, KV_MAIN], { KV_DATA_DIR: ws.dataDir, LISTEN_FDS: '1', LISTEN_FDNAMES: 'http' });
    expect(r.code, `${r.stdout}${r.stderr}`).toBe(2);
    // It opened its data (the kv's load event) before it found the listener unusable; it served nothing.
    expect(r.stdout.split('\n').filter((line) => line !== '' && !line.startsWith('{"event":"opened"'))).toEqual([]);
    expectOneLine(r.stderr, /^handoff-kv: listener "http" \(fd 3\) is a TCP socket bound to no address: listening on it would take a random port on every interface/);
  });
});

describe('the kv daemon given a malformed key', () => {
  it('answers 400 and serves on (a bad percent-escape used to crash it)', async () => {
    await using ws = new Workspace();
    const child = spawn(process.execPath, [KV_MAIN], { env: { ...process.env, KV_DATA_DIR: ws.dataDir, KV_PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    onTestFinished(() => {
      child.kill('SIGKILL');
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const port = await waitForValue('the kv daemon to serve', () => /"http=tcp:127\.0\.0\.1:(\d+)"/.exec(out)?.[1], 15_000, { context: () => out });
    for (const method of ['GET', 'PUT']) {
      const r = await fetch(`http://127.0.0.1:${port}/kv/%zz`, { method, ...(method === 'PUT' ? { body: 'v' } : {}) });
      expect([method, r.status, await r.text()]).toEqual([method, 400, 'malformed percent-encoding in the key\n']);
    }
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
    expect(child.exitCode, out).toBeNull();
  });
});

describe('[daemon] data_dir that is not the data directory the daemon locks', () => {
  it('is told apart from a daemon still starting, without waiting for the start timeout: exit 1, one line naming both, nothing left running', async () => {
    await using ws = new Workspace();
    const other = join(ws.dir, 'other-data');
    mkdirSync(other);
    const file = ws.config('', { KV_DATA_DIR: other });
    const sup = ws.start(['--config', file]);
    showOnFailure(sup);
    expect(await sup.exited).toBe(1);
    // (Only the early refusal says this; the start timeout would say the daemon did not answer.)
    expectOneLine(sup.output, /^handoff-supervisor: the daemon could not start: the daemon \(pid \d+\) answered on \S+ but does not hold the lock on \S+\/data: its data directory probably differs from the configured one \(\[daemon\] data_dir\); make them the same/);
    await expectNothingLeft(ws);
  });
});

describe('handoffctl and a supervisor that dies mid-answer', () => {
  it('says the supervisor closed the connection mid-answer, never "undefined: undefined"', async () => {
    await using ws = new Workspace();
    for (const answer of ['{"type":"phase","phase":"sealing"}\n{"type":"error"}\n', '{"type":"phase","phase":"sealing"}\n{"type":"result","committed":tr']) {
      const server = createServer((socket: Socket) => {
        socket.once('data', () => {
          socket.end(answer);
        });
      });
      await new Promise<void>((resolve) => server.listen(ws.trigger, resolve));
      try {
        const r = await ws.ctl(['upgrade']);
        expect(r.code).toBe(1);
        expect(r.stderr).toBe('handoffctl: the supervisor closed the connection mid-answer; did it die? check its log, then "handoffctl status" (the handoff had reached phase sealing)\n');
        expect(r.stderr).not.toMatch(/undefined/);
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
    }
  });
});

describe('--daemon, a second instance', () => {
  it('exits 3 naming the running one, which serves on', async () => {
    await using ws = new Workspace();
    const file = ws.config();
    const first = ws.start(['--config', file, '--daemon']);
    showOnFailure(first);
    expect(await first.exited).toBe(0);
    const pid = Number(/running as pid (\d+)/.exec(first.output)?.[1]);
    const second = ws.start(['--config', file, '--daemon']);
    expect(await second.exited).toBe(3);
    expectOneLine(second.output, new RegExp(`^handoff-supervisor: another handoff supervisor is running \\(pid ${pid}, pid file .*\\); stop it with "handoffctl stop", or start this one with --force to take over$`));
    const [status] = await ask(ws.trigger, { cmd: 'status' });
    expect(status).toMatchObject({ type: 'status', pid, lifecycle: 'serving' });
    await ask(ws.trigger, { cmd: 'stop' });
    await waitUntil('the detached supervisor to exit', () => !ws.processes().includes(pid), 15_000);
  });
});
