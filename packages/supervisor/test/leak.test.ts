/**
 * The supervisor library over a long life: 100 chained handoffs of the example kv daemon,
 * in a process of its own (so that a full GC can be forced), must not leak file
 * descriptors or memory.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const KV_MAIN = join(dirname(createRequire(import.meta.url).resolve('@handoff/example-kv/package.json')), 'dist', 'main.js');
const SCRIPT = fileURLToPath(new URL('fixtures/chain-handoffs.js', import.meta.url));

describe('a long-lived supervisor', () => {
  it('chains 100 handoffs without leaking file descriptors or memory', async (context) => {
    // .ci/run's second pass (Node 24) leaves this soak to the first.
    if (process.env.HANDOFF_LEAK_TESTS === '0') context.skip('HANDOFF_LEAK_TESTS=0');
    const dir = mkdtempSync(join(tmpdir(), 'handoff-leak-'));
    try {
      const child = spawn(process.execPath, ['--expose-gc', SCRIPT, dir, KV_MAIN, '100'], { cwd: dirname(SCRIPT), stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      expect(code, out).toBe(0);
      const line = out.split('\n').find((l) => l.startsWith('{"samples"'));
      expect(line, out).toBeDefined();
      type Sample = { fds: number; fdList: string[]; reaped: boolean; heapUsed: number };
      const { samples, status } = JSON.parse(line ?? '{}') as { samples: Sample[]; status: { incumbent: { generation: number } } };
      const [at10, at100] = samples as [Sample, Sample];
      console.log(`supervisor after 10 and 100 handoffs: fds ${at10.fds} -> ${at100.fds}, heap ${(at10.heapUsed / 1e6).toFixed(1)} -> ${(at100.heapUsed / 1e6).toFixed(1)} MB`);
      expect(status.incumbent.generation).toBe(101);
      expect([at10.reaped, at100.reaped], 'the old daemon was reaped before each sample').toEqual([true, true]);
      // By kind (socket, pipe, a file's path): inode numbers differ from one daemon to the next.
      const kinds = (list: string[]): Map<string, number> => list.reduce((m, t) => m.set(t.replace(/:\[\d+\]$/, ''), (m.get(t.replace(/:\[\d+\]$/, '')) ?? 0) + 1), new Map<string, number>());
      const before = kinds(at10.fdList);
      const grown = [...kinds(at100.fdList)].filter(([k, n]) => n > (before.get(k) ?? 0)).map(([k, n]) => `${k} ${before.get(k) ?? 0} -> ${n}`);
      expect(at100.fds, `fds that grew from 10 to 100 handoffs: ${grown.join(', ')}`).toBeLessThanOrEqual(at10.fds);
      // 90 more handoffs may not grow the collected heap by more than 2 MB (about 22 KB each).
      expect(at100.heapUsed - at10.heapUsed).toBeLessThan(2_000_000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
