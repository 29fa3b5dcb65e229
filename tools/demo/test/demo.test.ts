import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

describe('the live demo', () => {
  it('runs five handoffs under load and exits 0 with 0 errors and 0 lost writes', async () => {
    const child = spawn(process.execPath, [fileURLToPath(new URL('../dist/demo.js', import.meta.url))], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const code = await new Promise((resolve) => child.once('exit', resolve));
    expect(code, output).toBe(0);
    expect(output).toMatch(/handoff 5\/5: .*awaitingHello \d+ms › .*committed ✔/);
    expect(output).toMatch(/errors\s+0 \(refused 0, reset 0/);
    expect(output).toMatch(/lost: 0/);
    expect(output).toContain('0 errors, 0 lost writes.');
  });
});
