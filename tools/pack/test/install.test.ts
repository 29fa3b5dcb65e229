/**
 * The packages as a user gets them: pack every public package (pnpm rewrites `workspace:*`
 * to versions), install the tarballs with npm in an empty project outside the workspace,
 * then compile the README's `runDaemon` example there with `tsc`, run it under the installed
 * `handoff-supervisor`, hand it off with the installed `handoffctl`, and run the embedded
 * default (the example kv daemon) from the installed binary too, reloading its plugin in place.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { processesWithEnv, waitForValue } from '@handoff/testkit';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
/** The public packages, by directory. */
const PUBLIC = ['packages/protocol', 'packages/core', 'packages/supervisor', 'packages/reload', 'packages/testkit', 'apps/supervisor', 'apps/kv'];
const TSC = createRequire(import.meta.url).resolve('typescript/bin/tsc');

/** The README's example marked for this test: the TypeScript block after the marker comment. */
function readmeExample(readme: string, marker: string): string {
  const text = readFileSync(join(ROOT, readme), 'utf8');
  const at = text.indexOf(marker);
  if (at < 0) throw new Error(`${readme} has no "${marker}"`);
  const block = /```ts\n([\s\S]*?)```/.exec(text.slice(at));
  if (!block?.[1]) throw new Error(`${readme}: no ts block after "${marker}"`);
  return block[1];
}

/** A free loopback port (bound, then let go). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** An HTTP request over a Unix socket or TCP; resolves with status and body. */
function http(target: { socketPath: string } | { port: number }, method: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ ...target, ...('port' in target ? { host: '127.0.0.1' } : {}), method, path, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** Set in the environment of what this test starts (inherited by every descendant), to clean up. */
const TAG = 'HANDOFF_PACK_TEST';

describe('the public packages, packed and installed with npm outside the workspace', () => {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-pack-'));
  const packs = join(dir, 'packs');
  const project = join(dir, 'project');
  const children: ChildProcess[] = [];
  let output = '';
  const bin = (name: string): string => join(project, 'node_modules', '.bin', name);

  /** Starts an installed binary; collects its output. */
  const start = (name: string, args: string[], env: Record<string, string> = {}): { child: ChildProcess; exited: Promise<number | null> } => {
    const child = spawn(bin(name), args, { cwd: project, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HANDOFF_LOG_FORMAT: 'json', [TAG]: dir, ...env } });
    children.push(child);
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    return { child, exited: new Promise((resolve) => child.once('exit', resolve)) };
  };
  const ctl = async (args: string[]): Promise<{ code: number; out: string }> => {
    try {
      const { stdout, stderr } = await run(bin('handoffctl'), args, { cwd: project, timeout: 60_000 });
      return { code: 0, out: stdout + stderr };
    } catch (error) {
      const e = error as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  };
  /** Waits (deadline-bounded) until `probe` answers; a probe that throws (nothing listens yet) has not answered. */
  const until = <T>(what: string, probe: () => Promise<T | null>): Promise<T> => waitForValue(what, () => probe().catch(() => null), 20_000, { everyMs: 100, context: () => output });

  beforeAll(async () => {
    mkdirSync(packs);
    mkdirSync(project);
    for (const pkg of PUBLIC) await run('pnpm', ['pack', '--pack-destination', packs], { cwd: join(ROOT, pkg), timeout: 120_000 });
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'pack-check', private: true, type: 'module' }));
    const tarballs = readdirSync(packs).map((f) => join(packs, f));
    await run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs, '@types/node@^20.19'], { cwd: project, timeout: 240_000 });
  });

  afterAll(() => {
    // Process groups, and every process carrying the tag (the keeper's supervisor has its own session).
    for (const c of children) {
      try {
        if (c.pid) process.kill(-c.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const pid of processesWithEnv(`${TAG}=${dir}`)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('ships dist, the README and what a package documents — no sources, tests or build info — and depends on public packages only', async () => {
    const names = new Set<string>();
    for (const tarball of readdirSync(packs)) {
      const { stdout } = await run('tar', ['tzf', join(packs, tarball)]);
      const files = stdout.trim().split('\n');
      expect(files, tarball).toContain('package/README.md');
      expect(files.filter((f) => !/^package\/(dist\/|README\.md$|package\.json$|PROTOCOL\.md$|vectors\/)/.test(f)), tarball).toEqual([]);
      expect(files.filter((f) => /\.test\.|\.tsbuildinfo$/.test(f)), tarball).toEqual([]);
      const manifest = JSON.parse((await run('tar', ['xzf', join(packs, tarball), '-O', 'package/package.json'])).stdout) as { name: string; private?: boolean };
      expect(manifest.private, manifest.name).toBeUndefined();
      names.add(manifest.name);
    }
    expect(names.size).toBe(PUBLIC.length);
    for (const name of names) {
      const manifest = JSON.parse(readFileSync(join(project, 'node_modules', name, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
      for (const dep of Object.keys(manifest.dependencies ?? {})) if (dep.startsWith('@handoff/')) expect(names, `${name} depends on ${dep}`).toContain(dep);
    }
    const { stdout } = await run('npm', ['ls', '--all', '--json'], { cwd: project });
    expect((JSON.parse(stdout) as { problems?: string[] }).problems ?? []).toEqual([]);
  });

  it("compiles the core README's runDaemon example and hands it off with the installed binaries, keeping its data", async () => {
    onTestFailed(() => {
      console.error(output);
    });
    const app = join(project, 'counter');
    mkdirSync(join(app, 'data'), { recursive: true });
    writeFileSync(join(app, 'main.ts'), readmeExample('packages/core/README.md', '<!-- the example compiled and run by tools/pack'));
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, types: ['node'], outDir: 'dist' }, include: ['main.ts'] }),
    );
    await run(process.execPath, [TSC, '-p', app], { cwd: project, timeout: 120_000 }).catch((error: unknown) => {
      const e = error as { stdout?: string; stderr?: string; message: string };
      throw new Error(`the README example does not compile against the installed packages:\n${e.stdout ?? ''}${e.stderr ?? e.message}`);
    });
    const socketPath = join(app, 'http.sock');
    writeFileSync(
      join(app, 'handoff.toml'),
      `[daemon]
command = ${JSON.stringify(process.execPath)}
args = ["dist/main.js"]
env = { DATA_DIR = "data" }
cwd = ${JSON.stringify(app)}
data_dir = "data"

[[listeners]]
name = "http"
path = ${JSON.stringify(socketPath)}

[sockets]
runtime_dir = "run"
`,
    );
    mkdirSync(join(app, 'run'), { mode: 0o700 });
    const config = join(app, 'handoff.toml');
    const supervisor = start('handoff-supervisor', ['--config', config]);
    const target = { socketPath };
    const before = await until('the counter to serve', async () => JSON.parse((await http(target, 'GET', '/')).body) as { pid: number; build: string; count: number });
    for (let i = 0; i < 3; i++) await http(target, 'POST', '/');
    const up = await ctl(['--config', config, 'upgrade', '--env', 'BUILD_ID=counter-2']);
    expect(up, output).toMatchObject({ code: 0, out: expect.stringMatching(/committed: handoff .* now serving pid \d+/) });
    const after = JSON.parse((await http(target, 'GET', '/')).body) as { pid: number; build: string; count: number };
    expect(after).toMatchObject({ build: 'counter-2', count: before.count + 3 });
    expect(after.pid).not.toBe(before.pid);
    expect((await ctl(['--config', config, 'stop'])).code).toBe(0);
    expect(await supervisor.exited).toBe(0);
  });

  it('runs the embedded default (the example kv daemon) from the installed binary, reloads its plugin in place, and hands it off', async () => {
    onTestFailed(() => {
      console.error(output);
    });
    const port = await freePort();
    output = '';
    // Its validate plugin in a worker (the built-in runs in-thread by default): the installed @handoff/reload's worker script must be there.
    const supervisor = start('handoff-supervisor', ['--port', String(port)], { KV_PLUGIN_MODE: 'worker' });
    const trigger = await until('the supervisor to log where its trigger socket is', () => {
      const serving = output.split('\n').find((l) => l.includes('"msg":"serving"') && l.includes('"trigger"'));
      return Promise.resolve(serving ? (JSON.parse(serving) as { trigger: string }).trigger : null);
    });
    const put = await until('a write to be acknowledged', async () => {
      const r = await http({ port }, 'PUT', '/kv/a');
      return r.status === 200 ? r : null;
    });
    expect(put.body).toMatch(/revision/);
    // Swapped in place, in a new worker: same pid, no handoff.
    const reloaded = await ctl(['--socket', trigger, 'reload', 'validate']);
    expect(reloaded, output).toMatchObject({ code: 0, out: expect.stringMatching(/reloaded plugin validate: builtin in force in pid \d+ \(\d+ ms, no handoff\)/) });
    expect((await http({ port }, 'GET', '/metrics')).body).toMatch(/^handoff_plugin_info\{plugin="validate",version="builtin",state="active",mode="worker"\} 1$/m);
    const up = await ctl(['--socket', trigger, 'upgrade']);
    expect(up, output).toMatchObject({ code: 0 });
    expect((await http({ port }, 'GET', '/kv/a')).status).toBe(200);
    expect((await ctl(['--socket', trigger, 'stop'])).code).toBe(0);
    expect(await supervisor.exited).toBe(0);
  });

  it('runs the installed conformance kit against the installed example daemon, the reference checks included', async () => {
    const kv = join(project, 'node_modules', '@handoff', 'example-kv', 'dist', 'main.js');
    const json = join(dir, 'conformance.json');
    const checks = ['spawn-contract', 'hello', 'lock-kind', 'cold-start', 'handoff-self', 'reference-to', 'stop'];
    const r = await run(bin('handoff-conformance'), ['--reference', 'kv', '--only', checks.join(','), '--json', json, '--', process.execPath, kv], { cwd: project, timeout: 180_000, env: { ...process.env, [TAG]: dir } }).catch((error: unknown) => error as { stdout: string; stderr: string; code: number });
    const report = JSON.parse(readFileSync(json, 'utf8')) as { checks: { id: string; status: string; detail: string }[]; failed: number };
    expect(report.checks.map((c) => [c.id, c.status]), `${r.stdout}${r.stderr}`).toEqual(checks.map((id) => [id, 'passed']));
    expect(r.stdout).toMatch(/conformance: 7 passed, 0 failed, 0 skipped/);
  });
});
