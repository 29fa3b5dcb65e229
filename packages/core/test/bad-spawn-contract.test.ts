/**
 * A daemon given a spawn contract it cannot use — a malformed HANDOFF_* variable, an
 * inherited socket that is not bound — refuses with one reason instead of a stack trace, or
 * of serving on a random port nobody connects to.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';

const CORE = new URL('../dist/index.js', import.meta.url).href;

/**
 * Makes a socket of `family` that is never bound, puts it at fd 3 and execs the rest of the
 * arguments with LISTEN_PID set to their pid: as a supervisor passes a listener, but unbound.
 * (Node cannot make an unbound socket with an fd; perl is on every Linux. $^F: not close-on-exec.)
 */
const UNBOUND = 'use Socket; use POSIX; $^F = 255; socket(my $s, $ENV{FAMILY} eq "unix" ? PF_UNIX : PF_INET, SOCK_STREAM, 0) or die "socket: $!"; POSIX::dup2(fileno($s), 3) or die "dup2: $!"; $ENV{LISTEN_PID} = $$; exec @ARGV or die "exec: $!";';
const hasPerl = spawnSync('perl', ['-MSocket', '-MPOSIX', '-e', '1']).status === 0;

/** A complete daemon on runDaemon; prints the exit it resolves with (or how it failed) as one JSON line. */
const DAEMON = `
const { runDaemon } = await import(process.env.CORE);
try {
  const exit = await runDaemon({
    buildId: 't', dataDir: process.env.DATA_DIR, listeners: { http: { port: 0, host: '127.0.0.1' } },
    open: async () => ({}), revisions: () => [0], seal: async () => undefined, handler: () => (req, res) => res.end(),
    onServing: (info) => { console.log(JSON.stringify({ serving: info.listeningOn })); process.exit(0); },
  });
  console.log(JSON.stringify({ exit }));
} catch (error) {
  console.log(JSON.stringify({ threw: String(error) }));
}
process.exit(0);
`;

/** Runs `argv` to completion (with a deadline); its stdout. */
function run(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const [command = '', ...args] = argv;
    const child = spawn(command, args, { env: { ...process.env, CORE, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no exit within 15 s:\n${out}`));
    }, 15_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-contract-'));
  onTestFinished(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

describe('an inherited socket that is not bound', () => {
  it.skipIf(!hasPerl)('TCP: listen refuses it, naming the listener, instead of listening on a random port of every interface', async () => {
    const script = `const { detectRole } = await import(process.env.CORE); const http = await import('node:http');
      try { const server = http.createServer(); await detectRole().listeners.require('http').listen(server); console.log(JSON.stringify({ listening: server.address() })); }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); } process.exit(0);`;
    const out = await run(['perl', '-e', UNBOUND, process.execPath, '--input-type=module', '-e', script], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'http' });
    expect(JSON.parse(out)).toEqual({ code: 'HANDOFF_ENV_INVALID', message: expect.stringMatching(/^listener "http" \(fd 3\) is a TCP socket bound to no address: listening on it would take a random port on every interface/) });
  });

  it.skipIf(!hasPerl)('Unix: listen fails with a CoreError naming the listener', async () => {
    const script = `const { detectRole } = await import(process.env.CORE); const http = await import('node:http');
      try { await detectRole().listeners.require('http').listen(http.createServer()); console.log('listening'); }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); } process.exit(0);`;
    const out = await run(['perl', '-e', UNBOUND, process.execPath, '--input-type=module', '-e', script], { FAMILY: 'unix', LISTEN_FDS: '1', LISTEN_FDNAMES: 'http' });
    expect(JSON.parse(out)).toEqual({ code: 'HANDOFF_ENV_INVALID', message: expect.stringMatching(/^listener "http" \(fd 3\): cannot listen on the inherited socket \(EINVAL\)/) });
  });

  it.skipIf(!hasPerl)('runDaemon resolves with exit code 2 and the reason, serving nothing', async () => {
    const out = await run(['perl', '-e', UNBOUND, process.execPath, '--input-type=module', '-e', DAEMON], { LISTEN_FDS: '1', LISTEN_FDNAMES: 'http', DATA_DIR: dataDir() });
    expect(JSON.parse(out)).toEqual({ exit: { code: 2, reason: expect.stringMatching(/^listener "http" \(fd 3\) is a TCP socket bound to no address/) } });
  });
});

describe('a malformed spawn contract', () => {
  it('runDaemon resolves with exit code 2 and a reason naming the variable, its value and who sets it', async () => {
    for (const [name, value] of [['HANDOFF_ROLE', 'bogus'], ['HANDOFF_LISTEN_BACKLOGS', 'x'], ['HANDOFF_HEARTBEAT_MS', 'abc']] as const) {
      const out = await run([process.execPath, '--input-type=module', '-e', DAEMON], { [name]: value, DATA_DIR: dataDir() });
      expect(JSON.parse(out), name).toEqual({ exit: { code: 2, reason: expect.stringMatching(new RegExp(`^${name}="${value}" .*set by handoff-supervisor.*do not set them by hand$`)) } });
    }
  });
});
