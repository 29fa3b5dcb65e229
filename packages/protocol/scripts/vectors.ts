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
/** Application state: the msgpack encoding of {"offset": 4242}, carried as opaque bytes. */
const STATE = Uint8Array.from([0x81, 0xa6, ...Buffer.from('offset'), 0xcd, 0x10, 0x92]);
const SAMPLES: readonly { name: string; message: Message; note?: string }[] = [
  { name: 'Hello', message: { type: 'Hello', role: 'successor', pid: 4242, buildId: 'kv-2.0.0+3f9c2a1', protoMin: 1, protoMax: 1, capabilities: 15 } },
  { name: 'Hello (incumbent)', message: { type: 'Hello', role: 'incumbent', pid: 4100, buildId: 'kv-1.9.3', protoMin: 1, protoMax: 1, capabilities: 7 } },
  { name: 'HelloAck', message: { type: 'HelloAck', version: 1, handoffId: 'h-0001', capabilities: 15 } },
  { name: 'HelloAck (control session)', message: { type: 'HelloAck', version: 1, handoffId: null, capabilities: 7 }, note: 'handoffId is nil on an incumbent control session' },
  { name: 'PrepareHandoff', message: { type: 'PrepareHandoff', handoffId: 'h-0001', successorPid: 4242, deadlineMs: 30000, drainGraceMs: 5000, cutWork: false, moveConns: false }, note: 'cutWork is optional and false here, its default: the canonical encoding leaves it out' },
  { name: 'PrepareHandoff (cut tracked work at once)', message: { type: 'PrepareHandoff', handoffId: 'h-0001', successorPid: 4242, deadlineMs: 5000, drainGraceMs: 1000, cutWork: true, moveConns: false } },
  { name: 'PrepareHandoff (move idle connections)', message: { type: 'PrepareHandoff', handoffId: 'h-0001', successorPid: 4242, deadlineMs: 30000, drainGraceMs: 5000, cutWork: false, moveConns: true }, note: 'sent only with MoveConnections in force on both daemons\' sessions' },
  {
    name: 'ConnOffer (keep-alive HTTP)',
    message: { type: 'ConnOffer', handoffId: 'h-0001', connId: 1, listener: 'http', kind: 'http', leftover: new Uint8Array(0), state: null },
    note: 'an idle keep-alive connection between requests; its descriptor travels beside the frame (SCM_RIGHTS on the control connection, or the Node IPC channel)',
  },
  {
    name: 'ConnOffer (WebSocket, with state and unread bytes)',
    message: { type: 'ConnOffer', handoffId: 'h-0001', connId: 2, listener: 'http', kind: 'ws', leftover: Uint8Array.from([0x81, 0x02, 0x68, 0x69]), state: Uint8Array.from([0x81, 0xa8, ...Buffer.from('protocol'), 0xa4, ...Buffer.from('chat')]) },
    note: 'leftover: an unmasked text frame "hi" read and not consumed; state: the msgpack map {"protocol": "chat"}, the daemon\'s own encoding',
  },
  { name: 'DrainProgress', message: { type: 'DrainProgress', handoffId: 'h-0001', pending: 3, kinds: ['run', 'connection'], counts: [2, 1], oldest: 'run 17: nightly export for alice', oldestMs: 95000, leftMs: 45000 } },
  { name: 'Drained', message: { type: 'Drained', handoffId: 'h-0001', openConnsRemaining: 0, acceptClosed: true, workCut: 0, connsOffered: 0 }, note: 'workCut is optional and 0 here, its default: the canonical encoding leaves it out' },
  { name: 'Drained (connections offered)', message: { type: 'Drained', handoffId: 'h-0001', openConnsRemaining: 0, acceptClosed: true, workCut: 0, connsOffered: 2 } },
  { name: 'Drained (work cut)', message: { type: 'Drained', handoffId: 'h-0001', openConnsRemaining: 1, acceptClosed: true, workCut: 2, connsOffered: 0 } },
  { name: 'SealRequest', message: { type: 'SealRequest', handoffId: 'h-0001' } },
  { name: 'SealProgress', message: { type: 'SealProgress', handoffId: 'h-0001', completed: 3, total: 8 } },
  { name: 'SealComplete', message: { type: 'SealComplete', handoffId: 'h-0001', ...SEAL, state: null }, note: 'state is optional and nil here, its default: the canonical encoding leaves it out' },
  { name: 'SealComplete (with state)', message: { type: 'SealComplete', handoffId: 'h-0001', ...SEAL, state: STATE }, note: 'state is bin: opaque bytes (here the msgpack map {"offset": 4242}); in this file a bin value is written {"$bin": "<hex>"}' },
  { name: 'SealFailed', message: { type: 'SealFailed', handoffId: 'h-0001', error: 'fsync failed: EIO' } },
  { name: 'Begin', message: { type: 'Begin', handoffId: 'h-0001', seal: SEAL, state: null, conns: 0 } },
  { name: 'Begin (with state)', message: { type: 'Begin', handoffId: 'h-0001', seal: SEAL, state: STATE, conns: 0 }, note: "the incumbent's SealComplete state, byte for byte" },
  { name: 'Begin (with connections)', message: { type: 'Begin', handoffId: 'h-0001', seal: SEAL, state: null, conns: 2 }, note: 'the successor holds the 2 ConnOffers forwarded before it, and adopts them at Commit' },
  { name: 'Begin (recover from disk)', message: { type: 'Begin', handoffId: 'h-0001', seal: null, state: null, conns: 0 }, note: 'the incumbent died before sealing' },
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
  { name: 'Reload', message: { type: 'Reload', requestId: 7, target: 'plugin', name: 'validate', source: '' }, note: 'source empty: the plugin\'s own file' },
  { name: 'Reload (configuration)', message: { type: 'Reload', requestId: 8, target: 'config', name: '', source: '' } },
  { name: 'ReloadProgress', message: { type: 'ReloadProgress', requestId: 7, phase: 'swapped', detail: 'new calls go to version 2' } },
  { name: 'ReloadDone', message: { type: 'ReloadDone', requestId: 7, outcome: 'reloaded', version: '2', error: '', durationMs: 1084, cutCalls: 0 } },
  { name: 'ReloadDone (rolled back)', message: { type: 'ReloadDone', requestId: 7, outcome: 'rolledBack', version: '1', error: 'version 2 failed 3 calls in its probation', durationMs: 612, cutCalls: 0 } },
  { name: 'Heartbeat', message: { type: 'Heartbeat', ts: 1763712000000 }, note: 'ts above 2^32-1 is a uint 64 (0xcf), the canonical form; decoders accept every integer width' },
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

/** A frame around raw payload bytes (`length` and `version` may be forced, for the invalid ones). */
function frame(payload: readonly number[], length = payload.length + 2, version = 1): string {
  const head = Buffer.alloc(6);
  head.writeUInt32BE(length >>> 0);
  head.writeUInt16BE(version, 4);
  return toHex(Buffer.concat([head, Buffer.from(payload)]));
}

const str = (s: string): number[] => {
  const b = [...Buffer.from(s)];
  return [0xa0 | b.length, ...b];
};
/** `{type: "Heartbeat", ts: <the given encoding>}`. */
const heartbeat = (ts: readonly number[]): number[] => [0x82, ...str('type'), ...str('Heartbeat'), ...str('ts'), ...ts];

/** A non-canonical encoding every decoder MUST accept as `message`. */
export interface AcceptVector {
  readonly name: string;
  readonly direction: Direction;
  readonly message: Message;
  readonly hex: string;
}

/** Bytes every receiver MUST reject with `code` (`fatal`: it MUST also close the connection; `eof`: the stream ends after these bytes). */
export interface RejectVector {
  readonly name: string;
  readonly direction: Direction;
  readonly hex: string;
  readonly code: string;
  readonly fatal: boolean;
  readonly eof?: boolean;
}

const ACCEPT: readonly AcceptVector[] = [
  { name: 'uint above 2^32-1 as int 64 (0xd3)', direction: 'toDaemon', message: { type: 'Heartbeat', ts: 1763712000000 }, hex: frame(heartbeat([0xd3, 0, 0, 0x01, 0x9a, 0xa5, 0x6d, 0x60, 0x00])) },
  { name: 'small uint as uint 64 (0xcf)', direction: 'toDaemon', message: { type: 'Heartbeat', ts: 9 }, hex: frame(heartbeat([0xcf, 0, 0, 0, 0, 0, 0, 0, 9])) },
  { name: 'small uint as int 16 (0xd1)', direction: 'toDaemon', message: { type: 'Heartbeat', ts: 9 }, hex: frame(heartbeat([0xd1, 0, 9])) },
  { name: 'short str as str 8 (0xd9), map as map 16 (0xde)', direction: 'toDaemon', message: { type: 'Commit', handoffId: 'h-1' }, hex: frame([0xde, 0, 2, 0xd9, 4, ...Buffer.from('type'), 0xd9, 6, ...Buffer.from('Commit'), ...str('handoffId'), 0xd9, 3, ...Buffer.from('h-1')]) },
  { name: 'fields in another order, an unknown key', direction: 'toDaemon', message: { type: 'Commit', handoffId: 'h-1' }, hex: frame([0x83, ...str('handoffId'), ...str('h-1'), ...str('future'), 0xc3, ...str('type'), ...str('Commit')]) },
  {
    name: 'an optional field written with its default value (cutWork false)',
    direction: 'toDaemon',
    message: { type: 'PrepareHandoff', handoffId: 'h-1', successorPid: 7, deadlineMs: 1000, drainGraceMs: 100, cutWork: false, moveConns: false },
    hex: frame([0x86, ...str('type'), ...str('PrepareHandoff'), ...str('handoffId'), ...str('h-1'), ...str('successorPid'), 7, ...str('deadlineMs'), 0xcd, 0x03, 0xe8, ...str('drainGraceMs'), 0x64, ...str('cutWork'), 0xc2]),
  },
  { name: 'bin as bin 16 (0xc5)', direction: 'toDaemon', message: { type: 'Begin', handoffId: 'h-1', seal: null, state: Uint8Array.from([0xc0]), conns: 0 }, hex: frame([0x84, ...str('type'), ...str('Begin'), ...str('handoffId'), ...str('h-1'), ...str('seal'), 0xc0, ...str('state'), 0xc5, 0, 1, 0xc0]) },
];

const REJECT: readonly RejectVector[] = [
  { name: 'length above 1 MiB (rejected from the header alone)', direction: 'toDaemon', hex: frame([], 1_048_577), code: 'HANDOFF_FRAME_TOO_LARGE', fatal: true },
  { name: 'length below 2', direction: 'toDaemon', hex: frame([], 1).slice(0, 10), code: 'HANDOFF_FRAME_INVALID', fatal: true },
  { name: 'not msgpack (a reserved byte)', direction: 'toDaemon', hex: frame([0xc1]), code: 'HANDOFF_MALFORMED_PAYLOAD', fatal: false },
  { name: 'trailing bytes after the map', direction: 'toDaemon', hex: frame([...heartbeat([9]), 0xc0]), code: 'HANDOFF_MALFORMED_PAYLOAD', fatal: false },
  { name: 'a payload that is not a map', direction: 'toDaemon', hex: frame([0x91, 0x01]), code: 'HANDOFF_MALFORMED_PAYLOAD', fatal: false },
  { name: 'an unknown message type', direction: 'toDaemon', hex: frame([0x81, ...str('type'), ...str('Bogus')]), code: 'HANDOFF_UNKNOWN_MESSAGE', fatal: false },
  { name: 'a negative uint', direction: 'toDaemon', hex: frame(heartbeat([0xff])), code: 'HANDOFF_INVALID_FIELD', fatal: false },
  { name: 'an integer above 2^53-1', direction: 'toDaemon', hex: frame(heartbeat([0xcf, 0, 0x20, 0, 0, 0, 0, 0, 0])), code: 'HANDOFF_INVALID_FIELD', fatal: false },
  { name: 'a float that is not an integer', direction: 'toDaemon', hex: frame(heartbeat([0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0])), code: 'HANDOFF_INVALID_FIELD', fatal: false },
  { name: 'a required field missing', direction: 'toDaemon', hex: frame([0x81, ...str('type'), ...str('Commit')]), code: 'HANDOFF_INVALID_FIELD', fatal: false },
  { name: 'the stream ends inside the length field', direction: 'toDaemon', hex: '000000', code: 'HANDOFF_FRAME_TRUNCATED', fatal: true, eof: true },
  { name: 'the stream ends inside the payload', direction: 'toDaemon', hex: frame(heartbeat([9])).slice(0, -2), code: 'HANDOFF_FRAME_TRUNCATED', fatal: true, eof: true },
  { name: 'a frame version the receiver does not speak (2)', direction: 'toDaemon', hex: frame(heartbeat([9]), undefined, 2), code: 'HANDOFF_UNSUPPORTED_VERSION', fatal: false },
  { name: 'a handoffId with a character outside [A-Za-z0-9._:-]', direction: 'toDaemon', hex: frame([0x82, ...str('type'), ...str('Commit'), ...str('handoffId'), ...str('h 1')]), code: 'HANDOFF_INVALID_FIELD', fatal: false },
  { name: 'a code in lower case', direction: 'toDaemon', hex: frame([0x84, ...str('type'), ...str('Abort'), ...str('handoffId'), 0xc0, ...str('code'), ...str('cancelled'), ...str('reason'), 0xa0]), code: 'HANDOFF_INVALID_FIELD', fatal: false },
  { name: 'a text of 4097 bytes', direction: 'toDaemon', hex: frame([0x84, ...str('type'), ...str('Abort'), ...str('handoffId'), 0xc0, ...str('code'), ...str('X'), ...str('reason'), 0xda, 0x10, 0x01, ...Buffer.alloc(4097, 0x61)]), code: 'HANDOFF_INVALID_FIELD', fatal: false },
  { name: 'bin where a string is expected', direction: 'toDaemon', hex: frame([0x82, ...str('type'), ...str('Commit'), ...str('handoffId'), 0xc4, 3, ...Buffer.from('h-1')]), code: 'HANDOFF_INVALID_FIELD', fatal: false },
  { name: 'DrainProgress with kinds and counts of different lengths', direction: 'toSupervisor', hex: frame([0x88, ...str('type'), ...str('DrainProgress'), ...str('handoffId'), ...str('h-1'), ...str('pending'), 1, ...str('kinds'), 0x91, ...str('job'), ...str('counts'), 0x90, ...str('oldest'), 0xa0, ...str('oldestMs'), 0, ...str('leftMs'), 0]), code: 'HANDOFF_INVALID_FIELD', fatal: false },
  { name: 'a message sent the wrong way (Drained to a daemon)', direction: 'toDaemon', hex: frame([0x84, ...str('type'), ...str('Drained'), ...str('handoffId'), ...str('h-1'), ...str('openConnsRemaining'), 0, ...str('acceptClosed'), 0xc3]), code: 'HANDOFF_WRONG_DIRECTION', fatal: false },
];

export function buildVectors(): Vector[] {
  return SAMPLES.map(({ name, message, note }) => {
    const direction = MESSAGE_SCHEMAS[message.type].directions[0] as Direction;
    return { name, direction, message, hex: toHex(encodeFrame(message, direction)), ...(note ? { note } : {}) };
  });
}

const file = fileURLToPath(new URL('../vectors/v1.json', import.meta.url));
/** Bytes (msgpack bin) have no JSON form: this file writes them as {"$bin": "<hex>"}. */
const binAsHex = (_key: string, value: unknown): unknown => (value instanceof Uint8Array ? { $bin: toHex(value) } : value);
const text = `${JSON.stringify({ protocol: 1, byteOrder: 'big-endian', vectors: buildVectors(), accept: ACCEPT, reject: REJECT }, binAsHex, 2)}\n`;
if (process.argv.includes('--write')) {
  writeFileSync(file, text);
  console.log(`wrote ${file}`);
} else if (readFileSync(file, 'utf8') !== text) {
  console.error(`${file} differs from this encoder's output; run with --write and review the diff`);
  process.exitCode = 1;
} else {
  console.log('vectors match');
}
