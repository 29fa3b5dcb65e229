#!/usr/bin/env node
/**
 * The live demonstration of handoff: starts handoff-supervisor on its embedded default (the
 * example key-value daemon on a loopback port), drives continuous load (keep-alive readers,
 * a prober opening a fresh connection every 5 ms, writers keeping a ledger of acknowledged
 * writes), performs five handoffs showing their progress, verifies every acknowledged write
 * after the last one, and prints a summary. Exits 0 only with 0 errors and 0 lost writes.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ask } from '@handoff/supervisor-cli/client';
import { LoadDriver, verifyLedger } from '@handoff/testkit';

const HANDOFFS = Number(process.env.HANDOFF_DEMO_HANDOFFS ?? 5);
const tty = process.stdout.isTTY;
const bold = (s: string): string => (tty ? `\x1b[1m${s}\x1b[0m` : s);
const green = (s: string): string => (tty ? `\x1b[32m${s}\x1b[0m` : s);
const red = (s: string): string => (tty ? `\x1b[31m${s}\x1b[0m` : s);
const dim = (s: string): string => (tty ? `\x1b[2m${s}\x1b[0m` : s);

const MAIN = join(dirname(createRequire(import.meta.url).resolve('@handoff/supervisor-cli/package.json')), 'dist', 'main.js');

function waitForLine<T>(stream: NodeJS.ReadableStream, pick: (line: Record<string, unknown>) => T | undefined, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    let buffer = '';
    const timer = setTimeout(() => {
      reject(new Error(`the supervisor did not start within ${timeoutMs} ms`));
    }, timeoutMs);
    const onData = (chunk: Buffer): void => {
      buffer += chunk.toString();
      for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        try {
          const found = pick(JSON.parse(line) as Record<string, unknown>);
          if (found !== undefined) {
            clearTimeout(timer);
            stream.off('data', onData);
            resolve(found);
            return;
          }
        } catch {
          // not a JSON log line
        }
      }
    };
    stream.on('data', onData);
  });
}

console.log(bold('handoff — live demonstration'));
console.log(dim('supervisor + example key-value daemon (fsync per write) on 127.0.0.1, under continuous load\n'));
const supervisor = spawn(process.execPath, [MAIN, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HANDOFF_LOG_FORMAT: 'json' } });
let log = '';
supervisor.stderr.on('data', (d: Buffer) => (log += d.toString()));
supervisor.stdout.on('data', (d: Buffer) => (log += d.toString()));
let exitCode = 1;
try {
  const trigger = await waitForLine(supervisor.stdout, (l) => (l.msg === 'serving' ? String(l.trigger) : undefined), 30_000);
  const [status] = await ask(trigger, { cmd: 'status' });
  const address = (status?.listeners as { address: string }[] | undefined)?.[0]?.address ?? '';
  const port = Number(address.split(':').pop());
  console.log(`supervisor pid ${String(status?.pid)}, daemon pid ${String((status?.incumbent as { pid: number }).pid)}, listening on ${address}`);
  const load = new LoadDriver({ port, readers: 16, writers: 4, probeEveryMs: 5, maxDurationMs: 120_000 }).start();
  await load.waitForProgress(200);
  const durations: number[] = [];
  for (let i = 1; i <= HANDOFFS; i++) {
    const started = Date.now();
    process.stdout.write(`\nhandoff ${i}/${HANDOFFS}: `);
    const answers = await ask(trigger, { cmd: 'upgrade' }, (a) => {
      // Each line closes a phase: show it with the time it took.
      if (a.type === 'phase' && a.from !== 'idle') process.stdout.write(`${String(a.from)} ${dim(`${String(a.phaseMs)}ms`)} › `);
    });
    // (The result may be followed by probation lines.)
    const result = answers.find((a) => a.type === 'result') ?? answers.at(-1);
    if (result?.type !== 'result' || result.committed !== true) throw new Error(`handoff ${i} did not commit: ${JSON.stringify(result)}`);
    durations.push((result.timings as { totalMs: number }).totalMs);
    process.stdout.write(green(`committed ✔ ${Date.now() - started} ms, now pid ${String(result.incumbentPid)}`));
    await load.waitForProgress(300);
  }
  const report = await load.stop();
  process.stdout.write(`\n\nverifying ${report.acknowledgedWrites} acknowledged writes against the last daemon… `);
  const lost = await verifyLedger(port, load.ledger);
  console.log(lost.length === 0 ? green('all present') : red(`${lost.length} lost`));
  const e = report.errors;
  const errors = e.refused + e.reset + e.timeout + e.non2xx + e.other;
  const sorted = [...durations].sort((a, b) => a - b);
  const rows: [string, string][] = [
    ['handoffs', `${HANDOFFS} committed`],
    ['requests', `${report.requests} (${report.byRole.reader.requests} keep-alive reads, ${report.probes} fresh connections, ${report.byRole.writer.requests} writes)`],
    ['errors', `${errors} (refused ${report.errors.refused}, reset ${report.errors.reset}, timeout ${report.errors.timeout}, non-2xx ${report.errors.non2xx}, other ${report.errors.other})`],
    ['acknowledged writes', `${report.acknowledgedWrites}, verified after the last handoff: ${report.acknowledgedWrites - lost.length}, lost: ${lost.length}`],
    ['longest wait to be served on a fresh connection', `${report.maxProbeMs} ms (includes the window with no process accepting)`],
    ['handoff duration', `median ${sorted[Math.floor(sorted.length / 2)] ?? 0} ms, max ${sorted.at(-1) ?? 0} ms (mostly the new process starting)`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log(`\n${bold('summary')}`);
  for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
  const ok = errors === 0 && lost.length === 0;
  console.log(`\n${ok ? green('0 errors, 0 lost writes.') : red('FAILED: errors or lost writes; see above.')}`);
  exitCode = ok ? 0 : 1;
  await ask(trigger, { cmd: 'stop' });
  await new Promise((resolve) => supervisor.once('exit', resolve));
} catch (error) {
  console.error(red(`\ndemo failed: ${(error as Error).message}`));
  console.error(dim(`--- supervisor log ---\n${log}`));
  supervisor.kill('SIGTERM');
}
process.exitCode = exitCode;
