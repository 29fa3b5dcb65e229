import { describe, expect, it } from 'vitest';
import { runShell } from './hooks.js';

describe('hook commands', () => {
  // (Their length is checked with the rest of the configuration: config.test.ts.)
  it('that cannot even be started are a failed hook with the reason, never an exception', async () => {
    // 200 KB in one argument: spawn fails with E2BIG.
    await expect(runShell('true;'.repeat(40_000), {}, 5_000)).resolves.toEqual({ ok: false, code: null, output: 'cannot run the hook with /bin/sh: spawn E2BIG' });
    await expect(runShell('echo out; exit 3', {}, 5_000)).resolves.toEqual({ ok: false, code: 3, output: 'out\n' });
    await expect(runShell('exit 0', {}, 5_000)).resolves.toEqual({ ok: true, code: 0, output: '' });
  });
});
