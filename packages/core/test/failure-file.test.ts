/**
 * HANDOFF_FAILURE_FILE: a daemon that exits before it serves leaves its last output there; one
 * that served leaves nothing; its children never write it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';

const CORE = new URL('../dist/index.js', import.meta.url).href;

/** Runs an ES module script with core loaded first and the failure file set; the file's text, or null. */
function lastWords(script: string): { text: string | null; stdout: string } {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-failure-file-'));
  onTestFinished(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const file = join(dir, 'failure');
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `const core = await import(${JSON.stringify(CORE)});\n${script}`], {
    env: { ...process.env, HANDOFF_FAILURE_FILE: file },
    encoding: 'utf8',
    timeout: 20_000,
  });
  return { text: existsSync(file) ? readFileSync(file, 'utf8') : null, stdout: r.stdout };
}

describe('the failure file', () => {
  it('holds the last output of a daemon that exits before it serves', () => {
    const { text } = lastWords(`console.log('starting'); process.stdout.write(Buffer.from('bytes too\\n')); console.error('no configuration'); process.exit(3);`);
    expect(text).toBe('starting\nbytes too\nno configuration\n');
  });

  it('ends with the error of an uncaught exception, after its stack', () => {
    const { text } = lastWords(`throw new TypeError('kaput');`);
    expect(text).toMatch(/^\nTypeError: kaput\n\s+at [\s\S]*\nTypeError: kaput\n$/);
  });

  it('keeps only the last 4 KiB', () => {
    const { text } = lastWords(`for (let i = 0; i < 2000; i++) console.log('line ' + i); process.exit(1);`);
    expect(text?.length).toBe(4096);
    expect(text?.endsWith('line 1999\n')).toBe(true);
  });

  it('is not written once the daemon serves, and is not passed on to its children', () => {
    const { text, stdout } = lastWords(
      `const { disarmFailureFile } = await import(${JSON.stringify(new URL('../dist/failure-file.js', import.meta.url).href)});
       console.log('children would get ' + String(process.env.HANDOFF_FAILURE_FILE));
       disarmFailureFile();
       console.log('serving');
       process.exit(1);`,
    );
    expect(stdout).toBe('children would get undefined\nserving\n');
    expect(text).toBeNull();
  });
});
