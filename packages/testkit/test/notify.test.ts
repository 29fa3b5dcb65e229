/**
 * handoff-supervisor's systemd notifier (apps/supervisor/src/notify.ts) with the real
 * `/usr/bin/systemd-notify` (systemd 252 on Debian 12) against the testkit's stand-in notify
 * socket. It lives here, not beside the notifier: @handoff/supervisor-cli cannot take the
 * testkit as a devDependency (the testkit depends on it; turbo refuses the cycle).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
// eslint-disable-next-line no-restricted-imports -- the notifier is not exported by @handoff/supervisor-cli, and a devDependency the other way round would be a cycle
import { SystemdNotifier } from '../../../apps/supervisor/src/notify.js';
import { NotifySocket } from '../src/index.js';

const SYSTEMD_NOTIFY = '/usr/bin/systemd-notify';

/** A temp directory, removed on dispose. */
function tempDir(): Disposable & { readonly dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-notify-'));
  return {
    dir,
    [Symbol.dispose]: () => {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A notifier for `socket` with the real systemd-notify, collecting its errors; closed on dispose. */
function notifierFor(socket: string, env: Record<string, string> = {}, timeoutMs?: number): AsyncDisposable & { notifier: SystemdNotifier; errors: string[] } {
  const errors: string[] = [];
  const notifier = SystemdNotifier.fromEnv(
    { NOTIFY_SOCKET: socket, ...env },
    {
      program: SYSTEMD_NOTIFY,
      onError: (m) => {
        errors.push(m);
      },
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    },
  );
  return { notifier, errors, [Symbol.asyncDispose]: () => notifier.close() };
}

function script(dir: string, name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return path;
}

describe('SystemdNotifier with systemd-notify', () => {
  it('sends ready, reloading and stopping as one datagram each, with exactly their variables, in call order', async () => {
    using tmp = tempDir();
    await using notify = await NotifySocket.open(tmp.dir);
    await using n = notifierFor(notify.path);
    const { notifier, errors } = n;
    expect(notifier.enabled).toBe(true);
    // Not awaited one by one: the notifier itself must keep the order.
    await Promise.all([notifier.ready('serving pid 4242', 4242), notifier.reloading('handing off'), notifier.stopping('draining')]);
    await notify.waitFor((m) => m.STOPPING === '1');
    expect(notify.messages).toEqual([
      { READY: '1', STATUS: 'serving pid 4242', MAINPID: '4242' },
      { RELOADING: '1', MONOTONIC_USEC: expect.stringMatching(/^\d+$/), STATUS: 'handing off' },
      { STOPPING: '1', STATUS: 'draining' },
    ]);
    expect(notify.barriers).toBe(3);
    expect(errors).toEqual([]);
  });

  it('sends status, extendTimeout and mainPid', async () => {
    using tmp = tempDir();
    await using notify = await NotifySocket.open(tmp.dir);
    await using n = notifierFor(notify.path);
    const { notifier, errors } = n;
    await notifier.status('idle');
    await notifier.extendTimeout(1_500);
    await notifier.mainPid(4321);
    await notify.waitFor((m) => m.MAINPID !== undefined);
    expect(notify.messages).toEqual([{ STATUS: 'idle' }, { EXTEND_TIMEOUT_USEC: '1500000' }, { MAINPID: '4321' }]);
    expect(errors).toEqual([]);
  });

  it('runs one systemd-notify at a time: many sends at once arrive in call order', async () => {
    using tmp = tempDir();
    await using notify = await NotifySocket.open(tmp.dir);
    // A wrapper that notes any overlap of two runs (mkdir is atomic).
    const overlaps = join(tmp.dir, 'overlaps');
    const lock = join(tmp.dir, 'running');
    const program = script(tmp.dir, 'notify-wrapper', `mkdir '${lock}' 2>/dev/null || echo overlap >> '${overlaps}'\n${SYSTEMD_NOTIFY} "$@"; rc=$?\nrmdir '${lock}'\nexit $rc`);
    const errors: string[] = [];
    await using notifier = SystemdNotifier.fromEnv({ NOTIFY_SOCKET: notify.path, PATH: process.env.PATH ?? '' }, { program, onError: (m) => errors.push(m) });
    const n = 15;
    await Promise.all(Array.from({ length: n }, (_, i) => notifier.status(`step ${i}`)));
    await notify.waitFor((m) => m.STATUS === `step ${n - 1}`);
    expect(notify.messages.map((m) => m.STATUS)).toEqual(Array.from({ length: n }, (_, i) => `step ${i}`));
    expect(existsSync(overlaps) ? readFileSync(overlaps, 'utf8') : '').toBe('');
    expect(errors).toEqual([]);
  });

  it('stamps RELOADING with CLOCK_MONOTONIC: within a second of the receiver’s time.monotonic()', async () => {
    using tmp = tempDir();
    await using notify = await NotifySocket.open(tmp.dir);
    await using n = notifierFor(notify.path);
    const { notifier } = n;
    await notifier.reloading('handing off');
    await notify.waitFor((m) => m.RELOADING === '1');
    const [datagram] = notify.datagrams;
    const sent = Number(datagram!.vars.MONOTONIC_USEC);
    const received = datagram!.monotonicUsec;
    expect(received - sent).toBeGreaterThanOrEqual(0); // the same clock: sent before received
    expect(received - sent).toBeLessThan(1_000_000);
  });

  it('keeps the barrier: systemd-notify waits for it, the receiver answers, and the send finishes fast with exit 0', async () => {
    using tmp = tempDir();
    await using notify = await NotifySocket.open(tmp.dir);
    await using n = notifierFor(notify.path);
    const { notifier, errors } = n;
    const started = Date.now();
    await notifier.status('barrier');
    // Unanswered, systemd-notify gives up on the barrier after 5 s and exits 1 (an error).
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(errors).toEqual([]);
    expect(notify.barriers).toBe(1);
    await notify.waitFor((m) => m.STATUS === 'barrier');
  });

  it('finds systemd-notify on PATH', () => {
    const notifier = SystemdNotifier.fromEnv({ NOTIFY_SOCKET: '/nonexistent/notify.sock', PATH: '/nonexistent:/usr/bin' }, { onError: () => undefined });
    expect(notifier.enabled).toBe(true);
    expect(notifier.program).toBe(SYSTEMD_NOTIFY);
  });

  it('does nothing without NOTIFY_SOCKET', async () => {
    using tmp = tempDir();
    const marker = join(tmp.dir, 'ran');
    const errors: string[] = [];
    const notifier = SystemdNotifier.fromEnv({ PATH: process.env.PATH ?? '' }, { program: script(tmp.dir, 'notify', `touch '${marker}'`), onError: (m) => errors.push(m) });
    expect(notifier.enabled).toBe(false);
    expect(notifier.program).toBeNull();
    await notifier.ready('serving', 1);
    await notifier.reloading('x');
    await notifier.stopping('x');
    notifier.startWatchdog();
    expect(notifier.watchdogRunning).toBe(false);
    await notifier.close();
    expect(existsSync(marker)).toBe(false);
    expect(errors).toEqual([]);
  });

  it('does nothing without systemd-notify, and says so once', async () => {
    using tmp = tempDir();
    await using notify = await NotifySocket.open(tmp.dir);
    const errors: string[] = [];
    const onPath = SystemdNotifier.fromEnv({ NOTIFY_SOCKET: notify.path, PATH: tmp.dir, WATCHDOG_USEC: '200000' }, { onError: (m) => errors.push(m) });
    const notExecutable = join(tmp.dir, 'systemd-notify');
    writeFileSync(notExecutable, '#!/bin/sh\n', { mode: 0o644 });
    const byPath = SystemdNotifier.fromEnv({ NOTIFY_SOCKET: notify.path }, { program: notExecutable, onError: (m) => errors.push(m) });
    for (const notifier of [onPath, byPath]) {
      expect(notifier.enabled).toBe(false);
      await notifier.ready('serving');
      await notifier.status('x');
      notifier.startWatchdog();
      expect(notifier.watchdogRunning).toBe(false);
      await notifier.close();
    }
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatch(/^NOTIFY_SOCKET is set, but there is no executable systemd-notify on PATH/);
    expect(errors[1]).toMatch(/^NOTIFY_SOCKET is set, but .*systemd-notify is not an executable file/);
    for (const e of errors) expect(e).not.toContain('\n');
    // Nothing reached the socket before this marker.
    await using n = notifierFor(notify.path);
    const { notifier } = n;
    await notifier.status('marker');
    await notify.waitFor((m) => m.STATUS === 'marker');
    expect(notify.messages).toEqual([{ STATUS: 'marker' }]);
  });

  it('reports a failed send (no socket at NOTIFY_SOCKET) in one line, and resolves', async () => {
    using tmp = tempDir();
    const missing = join(tmp.dir, 'missing.sock');
    await using n = notifierFor(missing);
    const { notifier, errors } = n;
    expect(notifier.enabled).toBe(true);
    await notifier.ready('serving', 1);
    expect(errors).toHaveLength(1);
    expect(errors[0]).not.toContain('\n');
    expect(errors[0]).toBe(`systemd-notify READY STATUS MAINPID to ${missing} failed (exit code 1): Failed to notify init system: No such file or directory`);
  });

  it('keeps one value on one line, and refuses a bad variable name', async () => {
    using tmp = tempDir();
    await using notify = await NotifySocket.open(tmp.dir);
    await using n = notifierFor(notify.path);
    const { notifier, errors } = n;
    await notifier.send({ 'NOT A NAME': 'x', STATUS: 'y' });
    await notifier.status('two\nlines\r\n');
    await notify.waitFor((m) => m.STATUS !== undefined);
    expect(notify.messages).toEqual([{ STATUS: 'two lines ' }]);
    expect(errors).toEqual(['systemd-notify: not a variable name: "NOT A NAME"; nothing sent']);
  });

  it('kills a systemd-notify that does not finish within the timeout', async () => {
    using tmp = tempDir();
    const pidFile = join(tmp.dir, 'pid');
    const errors: string[] = [];
    const program = script(tmp.dir, 'notify-hangs', `echo $$ > '${pidFile}'\nexec sleep 30`);
    await using notifier = SystemdNotifier.fromEnv({ NOTIFY_SOCKET: join(tmp.dir, 'n.sock'), PATH: process.env.PATH ?? '' }, { program, timeoutMs: 300, onError: (m) => errors.push(m) });
    const started = Date.now();
    await notifier.status('x');
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(errors).toEqual([`systemd-notify STATUS to ${join(tmp.dir, 'n.sock')}: no answer within 300 ms; killed`]);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
  });

  it('close() waits for the queue at most its bound, then kills and drops', async () => {
    using tmp = tempDir();
    const pidFile = join(tmp.dir, 'pid');
    const errors: string[] = [];
    const program = script(tmp.dir, 'notify-hangs', `echo $$ > '${pidFile}'\nexec sleep 30`);
    const notifier = SystemdNotifier.fromEnv({ NOTIFY_SOCKET: join(tmp.dir, 'n.sock'), PATH: process.env.PATH ?? '' }, { program, onError: (m) => errors.push(m) });
    const first = notifier.status('first');
    const second = notifier.status('second');
    const started = Date.now();
    try {
      await notifier.close(300);
    } finally {
      await notifier.close(0); // whatever happened, nothing keeps running
    }
    expect(Date.now() - started).toBeLessThan(5_000);
    await Promise.all([first, second]);
    expect(errors[0]).toBe('systemd-notify: 2 notification(s) still unsent after 300 ms; dropped');
    expect(errors[1]).toMatch(/^systemd-notify STATUS to .* failed \(killed by SIGKILL\)$/);
    expect(errors).toHaveLength(2); // the second was dropped, not run
    expect(() => process.kill(Number(readFileSync(pidFile, 'utf8')), 0)).toThrow(/ESRCH/);
    await notifier.status('after close'); // a no-op
    expect(errors).toHaveLength(2);
  });
});

describe('SystemdNotifier watchdog', () => {
  it('sends WATCHDOG=1 repeatedly every WATCHDOG_USEC/2, and stops', async () => {
    using tmp = tempDir();
    await using notify = await NotifySocket.open(tmp.dir);
    await using n = notifierFor(notify.path, { WATCHDOG_USEC: '200000' });
    const { notifier, errors } = n;
    notifier.startWatchdog();
    expect(notifier.watchdogRunning).toBe(true);
    const pings = (): number => notify.messages.filter((m) => m.WATCHDOG === '1').length;
    await notify.waitFor(() => pings() >= 4, 5_000);
    expect(notify.messages.every((m) => Object.keys(m).length === 1 && m.WATCHDOG === '1')).toBe(true);
    notifier.stopWatchdog();
    expect(notifier.watchdogRunning).toBe(false);
    await notifier.close();
    const count = pings();
    // The timer is gone: after a marker from another notifier, there is no more ping.
    await using other = notifierFor(notify.path);
    await other.notifier.status('marker');
    await notify.waitFor((m) => m.STATUS === 'marker');
    expect(pings()).toBe(count);
    expect(errors).toEqual([]);
  });

  it('pings when WATCHDOG_PID is this process or its parent (the keeper), not when another', async () => {
    using tmp = tempDir();
    await using notify = await NotifySocket.open(tmp.dir);
    for (const pid of [process.pid, process.ppid]) {
      await using n = notifierFor(notify.path, { WATCHDOG_USEC: '200000', WATCHDOG_PID: String(pid) });
      n.notifier.startWatchdog();
      expect(n.notifier.watchdogRunning).toBe(true);
    }
    // Each sent its first ping at once, and closing waited for it.
    await notify.waitFor(() => notify.messages.filter((m) => m.WATCHDOG === '1').length >= 2);
    await using other = notifierFor(notify.path, { WATCHDOG_USEC: '200000', WATCHDOG_PID: '999999999' });
    other.notifier.startWatchdog();
    expect(other.notifier.watchdogRunning).toBe(false);
    await using none = notifierFor(notify.path);
    none.notifier.startWatchdog();
    expect(none.notifier.watchdogRunning).toBe(false);
  });
});

describe('NotifySocket', () => {
  it('rejects waitFor at its deadline with what it received', async () => {
    using tmp = tempDir();
    await using notify = await NotifySocket.open(tmp.dir);
    await using n = notifierFor(notify.path);
    const { notifier } = n;
    await notifier.status('seen');
    await expect(notify.waitFor((m) => m.NEVER === '1', 300)).rejects.toThrow(/timed out after 300 ms[^]*received 1 message\(s\) and 1 barrier\(s\)[^]*"STATUS":"seen"/);
  });

  it('removes its socket and ends python on close', async () => {
    using tmp = tempDir();
    const notify = await NotifySocket.open(tmp.dir);
    try {
      expect(existsSync(notify.path)).toBe(true);
    } finally {
      await notify.close();
    }
    expect(existsSync(notify.path)).toBe(false);
    expect(() => process.kill(notify.pid!, 0)).toThrow(/ESRCH/);
  });
});
