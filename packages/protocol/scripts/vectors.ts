/**
 * Golden test vectors of protocol v1: the exact frame bytes of one instance of every
 * message (and of the variants with null fields). `--write` regenerates vectors/v1.json;
 * without it, checks that the file matches what this encoder produces.
 *
 * Regenerating changes the wire bytes other implementations test against: review the diff.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MESSAGE_SCHEMAS, encodeFrame } from '../src/index.js';
import type { Direction, Message } from '../src/index.js';

const SEAL = { revisions: [1042, 77], fingerprint: 'sha256:9f86d081884c7d65' };
const SAMPLES: readonly { name: string; message: Message; note?: string }[] = [
  { name: 'Hello', message: { type: 'Hello', role: 'successor', pid: 4242, buildId: 'kv-2.0.0+3f9c2a1', protoMin: 1, protoMax: 1, capabilities: 15 } },
  { name: 'Hello (incumbent)', message: { type: 'Hello', role: 'incumbent', pid: 4100, buildId: 'kv-1.9.3', protoMin: 1, protoMax: 1, capabilities: 7 } },
  { name: 'HelloAck', message: { type: 'HelloAck', version: 1, handoffId: 'h-0001', capabilities: 15 } },
  { name: 'HelloAck (control session)', message: { type: 'HelloAck', version: 1, handoffId: null, capabilities: 7 }, note: 'handoffId is nil on an incumbent control session' },
  { name: 'PrepareHandoff', message: { type: 'PrepareHandoff', handoffId: 'h-0001', successorPid: 4242, deadlineMs: 30000, drainGraceMs: 5000 } },
  { name: 'Drained', message: { type: 'Drained', handoffId: 'h-0001', openConnsRemaining: 0, acceptClosed: true } },
  { name: 'SealRequest', message: { type: 'SealRequest', handoffId: 'h-0001' } },
  { name: 'SealProgress', message: { type: 'SealProgress', handoffId: 'h-0001', completed: 3, total: 8 } },
  { name: 'SealComplete', message: { type: 'SealComplete', handoffId: 'h-0001', ...SEAL } },
  { name: 'SealFailed', message: { type: 'SealFailed', handoffId: 'h-0001', error: 'fsync failed: EIO' } },
  { name: 'Begin', message: { type: 'Begin', handoffId: 'h-0001', seal: SEAL } },
  { name: 'Begin (recover from disk)', message: { type: 'Begin', handoffId: 'h-0001', seal: null }, note: 'the incumbent died before sealing' },
  { name: 'Ready', message: { type: 'Ready', handoffId: 'h-0001', listeningOn: ['http=tcp:127.0.0.1:8080'], healthy: true, revisions: [1042, 77] } },
  { name: 'Commit', message: { type: 'Commit', handoffId: 'h-0001' } },
  { name: 'Abort', message: { type: 'Abort', handoffId: 'h-0001', code: 'HANDOFF_REVISIONS_DIVERGED', reason: 'shard 0 behind' } },
  { name: 'ResumeAfterAbort', message: { type: 'ResumeAfterAbort', handoffId: 'h-0001', reason: 'successor exited' } },
  {
    name: 'SpawnHolder',
    message: { type: 'SpawnHolder', argv: ['/usr/bin/node', '/usr/lib/handoff/main.js', '--config', '/etc/handoff.toml'], cwd: '/', env: ['PATH=/usr/bin:/bin'] },
  },
  { name: 'HolderSpawned', message: { type: 'HolderSpawned', pid: 4300, error: '' } },
  { name: 'HolderSpawned (refused)', message: { type: 'HolderSpawned', pid: null, error: 'a handoff is in progress' }, note: 'pid is nil when no holder was started' },
  { name: 'Heartbeat', message: { type: 'Heartbeat', ts: 1763712000000 }, note: 'ts above 2^32 is an int 64 (0xd3)' },
];

export interface Vector {
  readonly name: string;
  readonly direction: Direction;
  readonly message: Message;
  readonly hex: string;
  readonly note?: string;
}

function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

export function buildVectors(): Vector[] {
  return SAMPLES.map(({ name, message, note }) => {
    const direction = MESSAGE_SCHEMAS[message.type].directions[0] as Direction;
    return { name, direction, message, hex: toHex(encodeFrame(message, direction)), ...(note ? { note } : {}) };
  });
}

const file = fileURLToPath(new URL('../vectors/v1.json', import.meta.url));
const text = `${JSON.stringify({ protocol: 1, byteOrder: 'big-endian', vectors: buildVectors() }, null, 2)}\n`;
if (process.argv.includes('--write')) {
  writeFileSync(file, text);
  console.log(`wrote ${file}`);
} else if (readFileSync(file, 'utf8') !== text) {
  console.error(`${file} differs from this encoder's output; run with --write and review the diff`);
  process.exitCode = 1;
} else {
  console.log('vectors match');
}
