import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PROBATION_MS, parseConfig } from './config.js';
import { ConfigError } from './errors.js';

const BASE = `[daemon]
command = "node"
args = ["app.js"]
data_dir = "/var/lib/app"

[[listeners]]
name = "http"
address = "127.0.0.1:8080"

[sockets]
runtime_dir = "/run/app"
`;

function error(text: string): string {
  try {
    parseConfig(text, 'handoff.toml');
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('no error');
}

describe('parseConfig', () => {
  it('fills defaults and resolves paths', () => {
    const c = parseConfig(BASE, '/etc/app/handoff.toml');
    expect(c).toMatchObject({
      // The daemon runs in the configuration's directory unless told otherwise.
      daemon: { command: 'node', args: ['app.js'], env: {}, cwd: '/etc/app', dataDir: '/var/lib/app' },
      listeners: [{ name: 'http', host: '127.0.0.1', port: 8080, backlog: 511 }],
      controlSocket: '/run/app/control.sock',
      triggerSocket: '/run/app/trigger.sock',
      journal: '/var/lib/app/.handoff-journal.json',
      pidFile: '/run/app/supervisor.pid',
      logFormat: 'auto',
      metrics: null,
      restart: { policy: 'on-failure', maxFailures: 5 },
      hooks: { preHandoff: null },
      health: null,
      probation: { windowMs: DEFAULT_PROBATION_MS },
    });
    expect(c.timeouts.livenessMs).toBe(3000);
  });

  it('takes a daemon without data_dir as one without a data directory (overlap), with the journal in the runtime dir', () => {
    const c = parseConfig(BASE.replace('data_dir = "/var/lib/app"\n', ''), '/etc/app/handoff.toml');
    expect(c.daemon.dataDir).toBeNull();
    expect(c.journal).toBe('/run/app/journal.json');
    expect(c.daemon.successorNice).toBe(10);
    expect(parseConfig(BASE.replace('[daemon]\n', '[daemon]\nsuccessor_nice = 0\n'), '/etc/app/handoff.toml').daemon.successorNice).toBe(0);
    expect(error(BASE.replace('[daemon]\n', '[daemon]\nsuccessor_nice = 40\n'))).toMatch(/successor_nice/);
  });

  it('resolves every relative path against the configuration file\'s directory', () => {
    const c = parseConfig(BASE.replace('data_dir = "/var/lib/app"', 'data_dir = "data"\ncwd = "srv"').replace('runtime_dir = "/run/app"', 'runtime_dir = "run"'), '/etc/app/handoff.toml');
    expect(c.daemon).toMatchObject({ cwd: '/etc/app/srv', dataDir: '/etc/app/data' });
    expect(c.triggerSocket).toBe('/etc/app/run/trigger.sock');
  });

  it("parses the README's configuration block as it stands", () => {
    const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
    const block = /```toml\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block).toBeDefined();
    const c = parseConfig(block ?? '', '/etc/kv/handoff.toml');
    expect(c).toMatchObject({ daemon: { dataDir: '/var/lib/kv' }, probation: { windowMs: 30_000 }, health: { url: 'http://127.0.0.1:8080/ready', failures: 3 } });
  });

  it('accepts every key', () => {
    const c = parseConfig(
      `${BASE}
[[listeners]]
name = "v6"
address = "[::1]:9000"
backlog = 128

[[listeners]]
name = "sock"
path = "http.sock"
mode = "0600"

[supervisor]
journal = "j.json"
pid_file = "s.pid"
log_format = "json"
log_file = "s.log"
metrics = "127.0.0.1:9464"

[timeouts]
drain_grace = 1000
drain = 2000
seal = 3000
ready = 4000
total = 5000
liveness = 600
heartbeat = 100
hello = 7000
stop_grace = 800
shutdown = 9000

[restart]
policy = "never"
initial_delay = 10
max_delay = 20
max_failures = 3
window = 30

[hooks]
pre_start = "true"
post_stop = "true"
pre_handoff = "node --check app.js"
pre_handoff_timeout = 5000

[health]
url = "http://127.0.0.1:8080/health"
expect_status = 204
timeout = 100
interval = 250
failures = 5

[probation]
window = 60000
`,
      '/etc/app/handoff.toml',
    );
    expect(c.listeners).toEqual([
      { name: 'http', host: '127.0.0.1', port: 8080, backlog: 511 },
      { name: 'v6', host: '::1', port: 9000, backlog: 128 },
      { name: 'sock', path: '/etc/app/http.sock', mode: 0o600, backlog: 511 },
    ]);
    expect(c).toMatchObject({ journal: '/etc/app/j.json', pidFile: '/etc/app/s.pid', metrics: { host: '127.0.0.1', port: 9464 }, restart: { policy: 'never', windowMs: 30 }, health: { url: 'http://127.0.0.1:8080/health', command: null, expectStatus: 204, timeoutMs: 100, intervalMs: 250, failures: 5 }, probation: { windowMs: 60_000 } });
    expect(parseConfig(`${BASE}\n[health]\ncommand = "./check.sh"\n\n[probation]\nwindow = 0\n`, '/etc/app/handoff.toml')).toMatchObject({ health: { url: null, command: './check.sh', expectStatus: null }, probation: { windowMs: 0 } });
  });

  it('refuses hook commands longer than 64 KiB (one argument of /bin/sh -c: Linux allows 128 KiB), naming the file, line and key and what to do', () => {
    for (const key of ['pre_start', 'pre_handoff', 'post_stop']) {
      const text = `${BASE}\n[hooks]\n${key} = "${'true;'.repeat(20_000)}"\n`;
      expect(() => parseConfig(text, 'handoff.toml'), key).toThrow(ConfigError);
      expect(() => parseConfig(text, 'handoff.toml'), key).toThrow(
        new RegExp(`^handoff\\.toml:14: \\[hooks\\] ${key}: the command is 100000 bytes, more than the 65536 a hook may have .*; put the script in a file and run that`),
      );
    }
    expect(parseConfig(`${BASE}\n[hooks]\npre_handoff = "${'x'.repeat(64 * 1024)}"\n`, 'handoff.toml').hooks.preHandoff).toHaveLength(64 * 1024);
  });

  const cases: [string, string, RegExp][] = [
    ['bad TOML', `${BASE}\n[timeouts\n`, /^handoff\.toml:13:\d+: not valid TOML/],
    ['an unknown key, with a suggestion', BASE.replace('command = "node"', 'comand = "node"'), /^handoff\.toml:2: \[daemon\] comand: unknown key; did you mean "command"\?/],
    ['an unknown top-level table', `${BASE}\n[tiemouts]\ndrain = 1\n`, /handoff\.toml:13: top level tiemouts: unknown key; did you mean "timeouts"\?/],
    ['a missing daemon', BASE.split('\n').slice(5).join('\n'), /a \[daemon\] table is required/],
    ['args of the wrong type', BASE.replace('args = ["app.js"]', 'args = "app.js"'), /handoff\.toml:3: \[daemon\] args: expected an array of strings/],
    ['no listener', BASE.replace(/\[\[listeners\]\][^[]*/, ''), /at least one \[\[listeners\]\] table is required/],
    ['a bad address', BASE.replace('127.0.0.1:8080', 'localhost:8080'), /handoff\.toml:8: \[\[listeners\]\] #1 address: expected "host:port" with an IP address/],
    ['both address and path', BASE.replace('address = "127.0.0.1:8080"', 'address = "127.0.0.1:8080"\npath = "/x"'), /give exactly one of address/],
    ['a duplicate listener name', `${BASE}\n[[listeners]]\nname = "http"\naddress = "127.0.0.1:9"\n`, /handoff\.toml:14: \[\[listeners\]\] #2 name: "http" is used by another listener/],
    ['a mode on a TCP listener', BASE.replace('address = "127.0.0.1:8080"', 'address = "127.0.0.1:8080"\nmode = "0600"'), /mode: applies to Unix socket listeners/],
    ['a bad backlog', BASE.replace('address = "127.0.0.1:8080"', 'address = "127.0.0.1:8080"\nbacklog = 0'), /backlog: expected an integer from 1 to 65535, got 0/],
    ['a duration as a string', `${BASE}\n[timeouts]\ndrain = "30s"\n`, /handoff\.toml:14: \[timeouts\] drain: expected an integer number of milliseconds from 1 to 86400000, got "30s"/],
    ['a heartbeat not shorter than liveness', `${BASE}\n[timeouts]\nliveness = 500\nheartbeat = 500\n`, /heartbeat: must be shorter than liveness/],
    ['a bad log format', `${BASE}\n[supervisor]\nlog_format = "xml"\n`, /log_format: expected one of "auto", "json", "pretty", got "xml"/],
    ['a bad metrics address', `${BASE}\n[supervisor]\nmetrics = "9464"\n`, /metrics: expected "host:port"/],
    ['a bad restart policy', `${BASE}\n[restart]\npolicy = "always"\n`, /policy: expected one of "on-failure", "never"/],
    ['no sockets', BASE.replace(/\[sockets\][^[]*/, ''), /\[sockets\] control: is required unless \[sockets\] runtime_dir is set/],
    ['a non-loopback health url', `${BASE}\n[health]\nurl = "http://10.0.0.1/health"\n`, /url: expected an http:\/\/ URL on loopback/],
    ['a health check with both url and command', `${BASE}\n[health]\nurl = "http://127.0.0.1:1/"\ncommand = "true"\n`, /handoff\.toml:13: \[health\]: give exactly one of url = .* or command = /],
    ['an expected status without a url', `${BASE}\n[health]\ncommand = "true"\nexpect_status = 200\n`, /\[health\] expect_status: applies to url = \.\.\. only/],
    ['a probation window the health check cannot fail a version in', `${BASE}\n[health]\nurl = "http://127.0.0.1:8080/ready"\ninterval = 1000\nfailures = 3\n\n[probation]\nwindow = 2999\n`, /\[probation\] window: 2999 ms is shorter than \[health\] interval × failures \(3000 ms\)/],
    ['a negative probation window', `${BASE}\n[probation]\nwindow = -1\n`, /handoff\.toml:14: \[probation\] window: expected an integer number of milliseconds from 0 to 86400000, got -1/],
    ['an env value that is not a string', BASE.replace('args = ["app.js"]', 'args = ["app.js"]\nenv = { PORT = 8080 }'), /env: PORT: expected a string, got 8080/],
  ];
  for (const [what, text, message] of cases) {
    it(`rejects ${what}, naming the file, line and key`, () => {
      expect(error(text)).toMatch(message);
    });
  }
});
