import { describe, expect, it } from 'vitest';
import { parseConfig } from './config.js';
import { ConfigError } from './errors.js';
import { runShell } from './hooks.js';

const BASE = `[daemon]
command = "node"
data_dir = "/var/lib/app"

[[listeners]]
name = "http"
address = "127.0.0.1:8080"

[sockets]
runtime_dir = "/run/app"

[hooks]
`;

describe('hook commands', () => {
  it('are refused at validation when longer than 64 KiB (one argument of /bin/sh -c: Linux allows 128 KiB), naming the file, line and key and what to do', () => {
    for (const key of ['pre_start', 'pre_handoff', 'post_stop']) {
      const text = `${BASE}${key} = "${'true;'.repeat(20_000)}"\n`;
      expect(() => parseConfig(text, 'handoff.toml'), key).toThrow(ConfigError);
      expect(() => parseConfig(text, 'handoff.toml'), key).toThrow(
        new RegExp(`^handoff\\.toml:13: \\[hooks\\] ${key}: the command is 100000 bytes, more than the 65536 a hook may have .*; put the script in a file and run that`),
      );
    }
    expect(parseConfig(`${BASE}pre_handoff = "${'x'.repeat(64 * 1024)}"\n`, 'handoff.toml').hooks.preHandoff).toHaveLength(64 * 1024);
  });

  it('that cannot even be started are a failed hook with the reason, never an exception', async () => {
    // 200 KB in one argument: spawn fails with E2BIG.
    await expect(runShell('true;'.repeat(40_000), {}, 5_000)).resolves.toEqual({ ok: false, code: null, output: 'cannot run the hook with /bin/sh: spawn E2BIG' });
    await expect(runShell('echo out; exit 3', {}, 5_000)).resolves.toEqual({ ok: false, code: 3, output: 'out\n' });
    await expect(runShell('exit 0', {}, 5_000)).resolves.toEqual({ ok: true, code: 0, output: '' });
  });
});
