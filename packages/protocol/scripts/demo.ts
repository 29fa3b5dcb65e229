/**
 * A demonstration of protocol v1 without processes: the four real state machines (the
 * supervisor's lifecycle and its handoff, the incumbent, the successor) exchange real frames
 * in the simulated world of `simulateHandoff`, through the happy path, each fault, and a
 * SIGKILL of each role mid-handoff and after the commit point. Exits non-zero if any
 * invariant breaks. (The live demo with real processes comes with the supervisor.)
 */
import { encodeFrame } from '../src/index.js';
import { simulateHandoff } from '../src/simulation.js';
import type { SimOptions, SimResult } from '../src/simulation.js';

const tty = process.stdout.isTTY;
const bold = (s: string): string => (tty ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string): string => (tty ? `\x1b[2m${s}\x1b[0m` : s);

/** The first crash step of `role` at which the trace before the crash contains `after`. */
function crashAfter(role: 'supervisor' | 'incumbent' | 'successor', after: string): SimOptions {
  for (let atStep = 0; atStep < 200; atStep++) {
    const options: SimOptions = { crashes: [{ role, atStep }], writeEvery: 3 };
    const trace = simulateHandoff(options).trace;
    const died = trace.findIndex((line) => line.startsWith(`${role} dies: SIGKILL`));
    if (died >= 0 && trace.slice(0, died).some((line) => line.includes(after))) return options;
  }
  throw new Error(`no step of the handoff comes after "${after}"`);
}

function show(title: string, options: SimOptions, verbose = false): SimResult {
  const r = simulateHandoff(options);
  console.log(`\n${bold(title)}`);
  if (verbose) for (const line of r.trace) console.log(`  ${dim(line)}`);
  const serving = r.serving.map((s) => `${s.role}${s.holdsLock ? ' (holds the lock)' : ''}`).join(', ') || 'nobody';
  const outcome = r.outcome ? `${r.outcome.kind}${r.outcome.code ? ` — ${r.outcome.code}` : ''}` : 'supervisor died before deciding';
  console.log(`  outcome: ${outcome}${r.lifecycle ? `; supervisor ${r.lifecycle.phase}, ${r.lifecycle.restarts} restart(s)` : ''}`);
  console.log(`  serving: ${serving}; durable revision ${r.durableRevision}, acknowledged ${r.acknowledgedWrites}`);
  console.log(`  invariants: ${r.problems.length === 0 ? 'one writer, one server, no lost write ✔' : `BROKEN: ${r.problems.join('; ')}`}`);
  return r;
}

console.log(bold('handoff protocol v1 — a handoff between four state machines, over real frames'));
const commit = encodeFrame({ type: 'Commit', handoffId: 'h-1' }, 'toDaemon');
console.log(`\nA frame (Commit): ${Buffer.from(commit).toString('hex').replace(/(..)/g, '$1 ').trim()}`);
console.log(dim('  u32 length | u16 version | msgpack map {type, handoffId}'));

const results: SimResult[] = [
  show('1. Normal handoff, with writes acknowledged throughout', { writeEvery: 3 }, true),
  show('2. The seal fails: rolled back, the incumbent keeps its lock', { faults: { sealFails: true }, writeEvery: 3 }),
  show('3. The successor opens data behind the seal: rejected', { faults: { successorStale: true }, writeEvery: 3 }),
  show('4. The successor speaks only protocol v2..3: refused before anything changes', { faults: { successorVersions: { min: 2, max: 3 } } }),
  show('5. SIGKILL of the supervisor right after Begin: the lock decides', crashAfter('supervisor', 'successor <- Begin')),
  show('6. SIGKILL of the incumbent while draining: the successor is promoted', crashAfter('incumbent', 'serving -> draining')),
  show('7. SIGKILL of the successor while it takes over: rolled back, the incumbent re-takes its lock', crashAfter('successor', 'successor <- Begin')),
  show('8. SIGKILL of the successor right after its Ready: committed, then the supervisor restarts the daemon', crashAfter('successor', 'takingOver -> ready')),
  show('9. SIGKILL of the successor right after it received Commit: the supervisor restarts the committed program', crashAfter('successor', 'successor <- Commit'), true),
];
const broken = results.filter((r) => r.problems.length > 0).length;
console.log(`\n${broken === 0 ? 'All scenarios kept the promises.' : `${broken} scenario(s) broke an invariant.`}`);
process.exitCode = broken === 0 ? 0 : 1;
