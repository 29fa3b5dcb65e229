/**
 * The messages of protocol v1, split by direction, and their validation.
 *
 * Every message is a msgpack map with a string `type` tag and the fields listed in
 * {@link MESSAGE_SCHEMAS}. Validation is driven by that one table, at decode (what came off
 * the wire) and at encode (what this process is about to send), so both sides agree.
 */
import { HandoffProtocolError, ProtocolErrorCode, describe } from './errors.js';

/** The lowest and highest protocol versions this implementation speaks. */
export const PROTOCOL_VERSION_MIN = 1;
/** See {@link PROTOCOL_VERSION_MIN}. */
export const PROTOCOL_VERSION_MAX = 1;

/** Size limits of v1 fields, enforced at decode and encode. */
export const FieldLimits = {
  /** Longest handoff id. Ids match `[A-Za-z0-9._:-]+`. */
  handoffIdMax: 64,
  /** Longest build id. */
  buildIdMax: 256,
  /** Longest free-text field (reasons, errors). */
  textMax: 4096,
  /** Longest data-directory fingerprint. */
  fingerprintMax: 512,
  /** Most listeners a Ready may name, and the longest name. */
  listenersMax: 64,
  addressMax: 512,
  /** Most shards a revision vector may hold. */
  revisionsMax: 4096,
  /** Longest deadline, in milliseconds (one day). */
  deadlineMsMax: 86_400_000,
  /** Largest pid. */
  pidMax: 0x7fff_ffff,
  /** Most arguments and environment entries of a SpawnHolder, and the longest one. */
  argvMax: 256,
  envMax: 1024,
  argMax: 8192,
  /** Longest plugin name in a Reload; names match `[A-Za-z0-9_.-]` (a plugin Reload's is not empty). */
  pluginNameMax: 64,
  /** Longest version label in a ReloadDone. */
  versionLabelMax: 256,
  /** Largest application state a SealComplete or Begin carries, in bytes (512 KiB). */
  stateMax: 512 * 1024,
  /** Most kinds of work a DrainProgress lists, and the longest kind. */
  workKindsMax: 32,
  workKindMax: 64,
  /** Largest leftover (bytes read and not consumed) and largest state of one moved connection (64 KiB each). */
  connBytesMax: 64 * 1024,
  /** Longest kind and listener name of a moved connection. */
  connKindMax: 64,
} as const;

/** The role a daemon announces in its Hello. */
export type Role = 'incumbent' | 'successor';

/** Why `name` cannot be a plugin's name in a Reload (1–64 of A–Z a–z 0–9 _ . -), or undefined when it can. */
export function pluginNameProblem(name: string): string | undefined {
  return /^[A-Za-z0-9_.-]{1,64}$/.test(name) ? undefined : `${JSON.stringify(name.slice(0, 80))} is not a plugin name (1–64 of A–Z a–z 0–9 _ . -)`;
}

/** What an incumbent reports once sealed; forwarded to the successor in Begin. */
export interface SealReport {
  /** Last revision per shard, index = shard number. */
  readonly revisions: readonly number[];
  /** An opaque fingerprint of the sealed data directory. */
  readonly fingerprint: string;
}

// ---- daemon -> supervisor ----------------------------------------------------------

/** First message of a daemon on every supervisor connection. */
export interface Hello {
  readonly type: 'Hello';
  readonly role: Role;
  readonly pid: number;
  readonly buildId: string;
  readonly protoMin: number;
  readonly protoMax: number;
  readonly capabilities: number;
}
/** The incumbent has stopped accepting, finished in-flight work and fsynced. */
export interface Drained {
  readonly type: 'Drained';
  readonly handoffId: string;
  readonly openConnsRemaining: number;
  readonly acceptClosed: boolean;
  /** Tracked long-lived work the drain cut (PROTOCOL.md §6, "Long-lived work"). Optional on the wire. */
  readonly workCut: number;
  /** Client connections offered to the successor with ConnOffer before this Drained (PROTOCOL.md §6, "Moving connections"). Optional on the wire. */
  readonly connsOffered: number;
}
/**
 * An idle client connection offered to the successor (PROTOCOL.md §6, "Moving connections"):
 * sent by the draining incumbent (to supervisor) and forwarded as is to the successor (to
 * daemon). Its descriptor travels beside it, on the daemon's descriptor channel.
 */
export interface ConnOffer {
  readonly type: 'ConnOffer';
  readonly handoffId: string;
  /** Unique within the handoff; names the descriptor that travels with it. */
  readonly connId: number;
  /** The listener the connection was accepted on (its name in `LISTEN_FDNAMES`). */
  readonly listener: string;
  /** What speaks on it: `http` (a keep-alive connection between requests), `ws`, or the daemon's own kind. */
  readonly kind: string;
  /** Bytes already read from the connection and not consumed: the successor reads them first. */
  readonly leftover: Uint8Array;
  /** The protocol state the successor needs to serve it (opaque, the daemon's own encoding); nil: none. */
  readonly state: Uint8Array | null;
}
/** Optional progress of a long seal. */
export interface SealProgress {
  readonly type: 'SealProgress';
  readonly handoffId: string;
  readonly completed: number;
  readonly total: number;
}
/**
 * What a draining incumbent still waits for (sent with `DrainProgress` in force, at least
 * every few seconds while it waits): tracked work by kind (`kinds[i]` has `counts[i]` items;
 * open connections count as the kind "connection"), the oldest item, and the time left.
 */
export interface DrainProgress {
  readonly type: 'DrainProgress';
  readonly handoffId: string;
  readonly pending: number;
  readonly kinds: readonly string[];
  readonly counts: readonly number[];
  readonly oldest: string;
  readonly oldestMs: number;
  readonly leftMs: number;
}
/** The incumbent has sealed its data and released the data-directory lock. */
export interface SealComplete {
  readonly type: 'SealComplete';
  readonly handoffId: string;
  readonly revisions: readonly number[];
  readonly fingerprint: string;
  /** Application state for the successor (opaque bytes, at most `stateMax`); nil: none. Optional on the wire. */
  readonly state: Uint8Array | null;
}
/** The incumbent could not drain or seal; it keeps its lock and serves on. */
export interface SealFailed {
  readonly type: 'SealFailed';
  readonly handoffId: string;
  readonly error: string;
}
/** The successor holds the lock, has opened the data and listens. */
export interface Ready {
  readonly type: 'Ready';
  readonly handoffId: string;
  readonly listeningOn: readonly string[];
  readonly healthy: boolean;
  readonly revisions: readonly number[];
}
/** Liveness, sent by every party while it works. `ts` is the sender's wall clock in ms. */
export interface Heartbeat {
  readonly type: 'Heartbeat';
  readonly ts: number;
}

// ---- supervisor -> daemon ----------------------------------------------------------

/** The supervisor's answer to Hello: the negotiated version and capabilities. */
export interface HelloAck {
  readonly type: 'HelloAck';
  readonly version: number;
  /** The handoff this session belongs to; null on an incumbent's control session. */
  readonly handoffId: string | null;
  readonly capabilities: number;
}
/** Asks the incumbent to drain. */
export interface PrepareHandoff {
  readonly type: 'PrepareHandoff';
  readonly handoffId: string;
  readonly successorPid: number;
  readonly deadlineMs: number;
  readonly drainGraceMs: number;
  /** Cut tracked long-lived work at once instead of waiting for it (the operator's `--no-drain-wait`). Optional on the wire. */
  readonly cutWork: boolean;
  /** Offer idle client connections to the successor instead of closing them (`MoveConnections` in force with both daemons). Optional on the wire. */
  readonly moveConns: boolean;
}
/** Asks the drained incumbent to seal and release the lock. */
export interface SealRequest {
  readonly type: 'SealRequest';
  readonly handoffId: string;
}
/** Tells the successor to take over. `seal` is null when the incumbent died: recover from disk. */
export interface Begin {
  readonly type: 'Begin';
  readonly handoffId: string;
  readonly seal: SealReport | null;
  /** The incumbent's application state from its SealComplete, byte for byte; nil: none. Optional on the wire. */
  readonly state: Uint8Array | null;
  /** How many ConnOffers the supervisor forwarded to this successor: it adopts them at Commit. Optional on the wire. */
  readonly conns: number;
}
/** The handoff is committed: the incumbent exits, the successor becomes the incumbent. */
export interface Commit {
  readonly type: 'Commit';
  readonly handoffId: string;
}
/** The handoff is abandoned; the receiver exits (successor) or resumes (incumbent). */
export interface Abort {
  readonly type: 'Abort';
  readonly handoffId: string | null;
  readonly code: string;
  readonly reason: string;
}
/** The incumbent re-takes its lock if it released it, re-opens its writer and accepts again. */
export interface ResumeAfterAbort {
  readonly type: 'ResumeAfterAbort';
  readonly handoffId: string;
  readonly reason: string;
}

/**
 * Start a listener holder: the incumbent runs `argv` (in `cwd`, with exactly `env`, entries
 * `NAME=value`) as its own detached child with its listeners inherited (PROTOCOL.md section 6,
 * "Listener holder"). Sent on an incumbent's control session, only with `SpawnHolder` in force.
 */
export interface SpawnHolder {
  readonly type: 'SpawnHolder';
  readonly argv: readonly string[];
  readonly cwd: string;
  readonly env: readonly string[];
}
/** The answer to SpawnHolder: the holder's pid, or nil and why not. */
export interface HolderSpawned {
  readonly type: 'HolderSpawned';
  readonly pid: number | null;
  readonly error: string;
}

/**
 * Reload in place, without a handoff: one plugin of the daemon (`target` "plugin", `name` its
 * name, `source` a module path to load instead of the plugin's own file, or "") or the
 * daemon's own configuration (`target` "config", `name` and `source` ""). Sent on an
 * incumbent's control session, only with `Reload` in force (PROTOCOL.md section 6, "Reload").
 */
export interface Reload {
  readonly type: 'Reload';
  readonly requestId: number;
  readonly target: 'plugin' | 'config';
  readonly name: string;
  readonly source: string;
}
/** A step of a Reload in progress (preparing, swapped, draining, …), for the operator. */
export interface ReloadProgress {
  readonly type: 'ReloadProgress';
  readonly requestId: number;
  readonly phase: string;
  readonly detail: string;
}
/** The outcome of a Reload; the last message about it. */
export interface ReloadDone {
  readonly type: 'ReloadDone';
  readonly requestId: number;
  readonly outcome: 'reloaded' | 'rolledBack' | 'failed' | 'refused';
  readonly version: string;
  readonly error: string;
  readonly durationMs: number;
  readonly cutCalls: number;
}

/** Messages a daemon (incumbent or successor) sends to the supervisor. */
export type ToSupervisorMessage = Hello | Drained | DrainProgress | ConnOffer | SealProgress | SealComplete | SealFailed | Ready | Heartbeat | HolderSpawned | ReloadProgress | ReloadDone;
/** Messages the supervisor sends to a daemon. */
export type ToDaemonMessage =
  | HelloAck
  | PrepareHandoff
  | SealRequest
  | Begin
  | Commit
  | Abort
  | ResumeAfterAbort
  | SpawnHolder
  | Reload
  | ConnOffer
  | Heartbeat;
/** Every v1 message. */
export type Message = ToSupervisorMessage | ToDaemonMessage;
/** The type tags of v1. */
export type MessageType = Message['type'];
/** The two directions of a channel. */
export type Direction = 'toSupervisor' | 'toDaemon';
/** The messages of one direction. */
export type MessageOf<D extends Direction> = D extends 'toSupervisor' ? ToSupervisorMessage : ToDaemonMessage;

// ---- schema ------------------------------------------------------------------------

/** How one field is validated. Exported for documentation generators and other-language ports. */
export type FieldSpec =
  | { readonly kind: 'uint'; readonly min: number; readonly max: number }
  | { readonly kind: 'string'; readonly min: number; readonly max: number; readonly pattern?: RegExp }
  | { readonly kind: 'bool' }
  | { readonly kind: 'enum'; readonly values: readonly string[] }
  | { readonly kind: 'uintArray'; readonly maxItems: number }
  | { readonly kind: 'stringArray'; readonly maxItems: number; readonly maxLength: number }
  | { readonly kind: 'nullable'; readonly inner: FieldSpec }
  | { readonly kind: 'sealReport' }
  /** msgpack bin: opaque bytes, at most `max`. */
  | { readonly kind: 'bin'; readonly max: number }
  /**
   * A field a receiver may find absent (added to v1 after its first release): absent means
   * `default`, and a canonical encoder leaves the field out when its value is `default`.
   */
  | { readonly kind: 'optional'; readonly inner: FieldSpec; readonly default: null | boolean | number };

/** The schema of one message type. */
export interface MessageSchema {
  readonly directions: readonly Direction[];
  readonly fields: Readonly<Record<string, FieldSpec>>;
  /** A cross-field rule; returns what is wrong, or undefined. */
  readonly check?: (message: Readonly<Record<string, unknown>>) => string | undefined;
}

const HANDOFF_ID_PATTERN = /^[A-Za-z0-9._:-]+$/;
const handoffId = { kind: 'string', min: 1, max: FieldLimits.handoffIdMax, pattern: HANDOFF_ID_PATTERN } as const satisfies FieldSpec;
const text = { kind: 'string', min: 0, max: FieldLimits.textMax } as const satisfies FieldSpec;
const uint53 = { kind: 'uint', min: 0, max: Number.MAX_SAFE_INTEGER } as const satisfies FieldSpec;
const version = { kind: 'uint', min: 1, max: 0xffff } as const satisfies FieldSpec;
const pid = { kind: 'uint', min: 1, max: FieldLimits.pidMax } as const satisfies FieldSpec;
const caps = { kind: 'uint', min: 0, max: 0xffff_ffff } as const satisfies FieldSpec;
const revisions = { kind: 'uintArray', maxItems: FieldLimits.revisionsMax } as const satisfies FieldSpec;
const fingerprint = { kind: 'string', min: 0, max: FieldLimits.fingerprintMax } as const satisfies FieldSpec;
const deadline = { kind: 'uint', min: 0, max: FieldLimits.deadlineMsMax } as const satisfies FieldSpec;
const requestId = { kind: 'uint', min: 1, max: 0xffff_ffff } as const satisfies FieldSpec;
const state = { kind: 'optional', inner: { kind: 'nullable', inner: { kind: 'bin', max: FieldLimits.stateMax } }, default: null } as const satisfies FieldSpec;
const toS = ['toSupervisor'] as const satisfies readonly Direction[];
const toD = ['toDaemon'] as const satisfies readonly Direction[];

/** {@link MESSAGE_SCHEMAS} with its literal types kept, for the agreement check below. */
const SCHEMAS = {
  Hello: {
    directions: toS,
    fields: {
      role: { kind: 'enum', values: ['incumbent', 'successor'] },
      pid,
      buildId: { kind: 'string', min: 0, max: FieldLimits.buildIdMax },
      protoMin: version,
      protoMax: version,
      capabilities: caps,
    },
    check: (m) => ((m.protoMin as number) > (m.protoMax as number) ? 'protoMin must not exceed protoMax' : undefined),
  },
  Drained: {
    directions: toS,
    fields: { handoffId, openConnsRemaining: uint53, acceptClosed: { kind: 'bool' }, workCut: { kind: 'optional', inner: uint53, default: 0 }, connsOffered: { kind: 'optional', inner: uint53, default: 0 } },
  },
  ConnOffer: {
    directions: ['toSupervisor', 'toDaemon'],
    fields: {
      handoffId,
      connId: { kind: 'uint', min: 1, max: 0xffff_ffff },
      listener: { kind: 'string', min: 0, max: FieldLimits.connKindMax },
      kind: { kind: 'string', min: 1, max: FieldLimits.connKindMax },
      leftover: { kind: 'bin', max: FieldLimits.connBytesMax },
      state: { kind: 'nullable', inner: { kind: 'bin', max: FieldLimits.connBytesMax } },
    },
  },
  DrainProgress: {
    directions: toS,
    fields: {
      handoffId,
      pending: uint53,
      kinds: { kind: 'stringArray', maxItems: FieldLimits.workKindsMax, maxLength: FieldLimits.workKindMax },
      counts: { kind: 'uintArray', maxItems: FieldLimits.workKindsMax },
      oldest: text,
      oldestMs: uint53,
      leftMs: uint53,
    },
    check: (m) => ((m.kinds as readonly string[]).length !== (m.counts as readonly number[]).length ? 'kinds and counts must have the same length' : undefined),
  },
  SealProgress: {
    directions: toS,
    fields: { handoffId, completed: uint53, total: uint53 },
    check: (m) => ((m.completed as number) > (m.total as number) ? 'completed must not exceed total' : undefined),
  },
  SealComplete: { directions: toS, fields: { handoffId, revisions, fingerprint, state } },
  SealFailed: { directions: toS, fields: { handoffId, error: text } },
  Ready: {
    directions: toS,
    fields: {
      handoffId,
      listeningOn: { kind: 'stringArray', maxItems: FieldLimits.listenersMax, maxLength: FieldLimits.addressMax },
      healthy: { kind: 'bool' },
      revisions,
    },
  },
  Heartbeat: { directions: ['toSupervisor', 'toDaemon'], fields: { ts: uint53 } },
  HelloAck: {
    directions: toD,
    fields: { version, handoffId: { kind: 'nullable', inner: handoffId }, capabilities: caps },
  },
  PrepareHandoff: {
    directions: toD,
    fields: { handoffId, successorPid: pid, deadlineMs: deadline, drainGraceMs: deadline, cutWork: { kind: 'optional', inner: { kind: 'bool' }, default: false }, moveConns: { kind: 'optional', inner: { kind: 'bool' }, default: false } },
    check: (m) =>
      (m.drainGraceMs as number) > (m.deadlineMs as number) ? 'drainGraceMs must not exceed deadlineMs' : undefined,
  },
  SealRequest: { directions: toD, fields: { handoffId } },
  Begin: { directions: toD, fields: { handoffId, seal: { kind: 'nullable', inner: { kind: 'sealReport' } }, state, conns: { kind: 'optional', inner: uint53, default: 0 } } },
  Commit: { directions: toD, fields: { handoffId } },
  Abort: {
    directions: toD,
    fields: {
      handoffId: { kind: 'nullable', inner: handoffId },
      code: { kind: 'string', min: 1, max: 64, pattern: /^[A-Z0-9_]+$/ },
      reason: text,
    },
  },
  ResumeAfterAbort: { directions: toD, fields: { handoffId, reason: text } },
  SpawnHolder: {
    directions: toD,
    fields: {
      argv: { kind: 'stringArray', maxItems: FieldLimits.argvMax, maxLength: FieldLimits.argMax },
      cwd: { kind: 'string', min: 1, max: FieldLimits.argMax },
      env: { kind: 'stringArray', maxItems: FieldLimits.envMax, maxLength: FieldLimits.argMax },
    },
    check: (m) => {
      if ((m.argv as readonly string[]).length === 0 || (m.argv as readonly string[])[0] === '') return 'argv must name a program';
      return (m.env as readonly string[]).every((e) => /^[A-Za-z_][A-Za-z0-9_]*=/.test(e)) ? undefined : 'env entries must be NAME=value';
    },
  },
  HolderSpawned: { directions: toS, fields: { pid: { kind: 'nullable', inner: pid }, error: text } },
  Reload: {
    directions: toD,
    fields: {
      requestId,
      target: { kind: 'enum', values: ['plugin', 'config'] },
      name: { kind: 'string', min: 0, max: FieldLimits.pluginNameMax, pattern: /^[A-Za-z0-9_.-]*$/ },
      source: { kind: 'string', min: 0, max: FieldLimits.argMax },
    },
    check: (m) => {
      if (m.target === 'plugin') return m.name === '' ? 'a plugin Reload must name the plugin' : undefined;
      return m.name !== '' || m.source !== '' ? 'a config Reload has an empty name and source' : undefined;
    },
  },
  ReloadProgress: { directions: toS, fields: { requestId, phase: { kind: 'string', min: 1, max: 32, pattern: /^[A-Za-z]+$/ }, detail: text } },
  ReloadDone: {
    directions: toS,
    fields: {
      requestId,
      outcome: { kind: 'enum', values: ['reloaded', 'rolledBack', 'failed', 'refused'] },
      version: { kind: 'string', min: 0, max: FieldLimits.versionLabelMax },
      error: text,
      durationMs: uint53,
      cutCalls: uint53,
    },
  },
} as const satisfies Readonly<Record<MessageType, MessageSchema>>;

/**
 * The v1 schema of every message: its directions and its fields, in wire order.
 * Unknown keys in a received map are ignored (forward compatibility within a version).
 */
export const MESSAGE_SCHEMAS: Readonly<Record<MessageType, MessageSchema>> = SCHEMAS;

// ---- compile-time agreement of the interfaces and MESSAGE_SCHEMAS -------------------

/*
 * The message interfaces and MESSAGE_SCHEMAS describe the same protocol twice; the types below
 * make `tsc` fail as soon as the two drift apart. For every message type T, the interface's
 * fields other than `type` must be exactly the fields derived from its schema: the same keys,
 * each `readonly`, each of the type its FieldSpec validates ('uint' is number, 'enum' the union
 * of its values, 'nullable' inner | null, ...). And the types whose schema lists 'toSupervisor'
 * (resp. 'toDaemon') must be exactly the members of ToSupervisorMessage (resp. ToDaemonMessage).
 * A failure is reported on `_SchemasAgree` and names the message that disagrees.
 */

/** True when A and B are the same type (not merely assignable to each other). */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the usual type-identity idiom
type Equal<A, B> = (<G>() => G extends A ? 1 : 2) extends <G>() => G extends B ? 1 : 2 ? true : false;

/** The TypeScript type of the values a FieldSpec accepts. */
type FieldType<S> = S extends { readonly kind: 'uint' }
  ? number
  : S extends { readonly kind: 'string' }
    ? string
    : S extends { readonly kind: 'bool' }
      ? boolean
      : S extends { readonly kind: 'enum'; readonly values: readonly (infer V)[] }
        ? V
        : S extends { readonly kind: 'uintArray' }
          ? readonly number[]
          : S extends { readonly kind: 'stringArray' }
            ? readonly string[]
            : S extends { readonly kind: 'nullable'; readonly inner: infer I }
              ? FieldType<I> | null
              : S extends { readonly kind: 'sealReport' }
                ? SealReport
                : S extends { readonly kind: 'bin' }
                  ? Uint8Array
                  : S extends { readonly kind: 'optional'; readonly inner: infer I }
                    ? FieldType<I>
                    : never;

/** The fields of message T as its schema describes them. */
type SchemaFields<T extends MessageType> = {
  readonly [K in keyof (typeof SCHEMAS)[T]['fields']]: FieldType<(typeof SCHEMAS)[T]['fields'][K]>;
};
/** The fields of message T as its interface declares them. */
type InterfaceFields<T extends MessageType> = Omit<Extract<Message, { readonly type: T }>, 'type'>;
/** The messages whose interface and schema disagree about their fields. */
type FieldDrift = {
  [T in MessageType]: Equal<InterfaceFields<T>, SchemaFields<T>> extends true
    ? never
    : `${T}: its interface's fields differ from MESSAGE_SCHEMAS.${T}.fields`;
}[MessageType];

/** The messages whose schema lists direction D. */
type SchemaDirected<D extends Direction> = {
  [T in MessageType]: D extends (typeof SCHEMAS)[T]['directions'][number] ? T : never;
}[MessageType];
/** The messages that are in the union of direction D or list D in their schema, but not both. */
type DirectionDrift = {
  [D in Direction]:
    | `${Exclude<SchemaDirected<D>, MessageOf<D>['type']>}: MESSAGE_SCHEMAS lists ${D}, but the message union does not`
    | `${Exclude<MessageOf<D>['type'], SchemaDirected<D>>}: in the ${D} message union, but MESSAGE_SCHEMAS does not list ${D}`;
}[Direction];

/** Compiles only when T is never, i.e. when there is no disagreement to report. */
type ExpectNone<T extends never> = T;
// eslint-disable-next-line @typescript-eslint/no-unused-vars -- a compile-time assertion, referenced nowhere
type _SchemasAgree = [ExpectNone<FieldDrift>, ExpectNone<DirectionDrift>];

/** Every v1 type tag, in the order of {@link MESSAGE_SCHEMAS}. */
export const MESSAGE_TYPES = Object.keys(MESSAGE_SCHEMAS) as readonly MessageType[];

function isMessageType(tag: string): tag is MessageType {
  return Object.prototype.hasOwnProperty.call(MESSAGE_SCHEMAS, tag);
}

function invalid(type: string, field: string, expected: string, got: unknown): HandoffProtocolError {
  return new HandoffProtocolError(
    ProtocolErrorCode.InvalidField,
    `${type}.${field}: expected ${expected}, got ${describe(got)}; the peer speaks protocol v1 incorrectly`,
    { messageType: type, field, expected },
  );
}

/** A source of field values: a decoded msgpack Map, or a message object being encoded. */
type FieldSource = (key: string) => unknown;

function validateValue(type: string, field: string, spec: FieldSpec, value: unknown): unknown {
  switch (spec.kind) {
    case 'uint':
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < spec.min || value > spec.max) {
        throw invalid(type, field, `an integer from ${spec.min} to ${spec.max}`, value);
      }
      return value;
    case 'string':
      if (typeof value !== 'string' || !isWellFormed(value)) throw invalid(type, field, 'a UTF-8 string', value);
      if (utf8Length(value) < spec.min || utf8Length(value) > spec.max) {
        throw invalid(type, field, `a string of ${spec.min} to ${spec.max} UTF-8 bytes`, value);
      }
      if (spec.pattern && !spec.pattern.test(value)) throw invalid(type, field, `a string matching ${String(spec.pattern)}`, value);
      return value;
    case 'bool':
      if (typeof value !== 'boolean') throw invalid(type, field, 'a boolean', value);
      return value;
    case 'enum':
      if (typeof value !== 'string' || !spec.values.includes(value)) throw invalid(type, field, `one of ${spec.values.join(', ')}`, value);
      return value;
    case 'uintArray': {
      if (!Array.isArray(value) || value.length > spec.maxItems) throw invalid(type, field, `an array of at most ${spec.maxItems} integers`, value);
      const out: number[] = [];
      for (const [i, item] of value.entries()) out.push(validateValue(type, `${field}[${i}]`, uint53, item) as number);
      return out;
    }
    case 'stringArray': {
      if (!Array.isArray(value) || value.length > spec.maxItems) throw invalid(type, field, `an array of at most ${spec.maxItems} strings`, value);
      const item: FieldSpec = { kind: 'string', min: 0, max: spec.maxLength };
      return value.map((v: unknown, i) => validateValue(type, `${field}[${i}]`, item, v));
    }
    case 'nullable':
      return value === null ? null : validateValue(type, field, spec.inner, value);
    case 'bin':
      if (!(value instanceof Uint8Array) || value.length > spec.max) throw invalid(type, field, `bytes (msgpack bin) of at most ${spec.max}`, value);
      // A copy: never a view that keeps a whole received frame alive.
      return new Uint8Array(value);
    case 'optional':
      return validateValue(type, field, spec.inner, value);
    case 'sealReport': {
      const get = fieldSource(value);
      if (!get) throw invalid(type, field, 'a map with revisions and fingerprint', value);
      return {
        revisions: validateValue(type, `${field}.revisions`, revisions, get('revisions')),
        fingerprint: validateValue(type, `${field}.fingerprint`, fingerprint, get('fingerprint')),
      };
    }
  }
}

/** Length of `s` in UTF-8 bytes (limits are in bytes, as other languages count them). */
export function utf8Length(s: string): number {
  let bytes = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0) as number;
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return bytes;
}

/** False when `s` holds a lone surrogate, which has no UTF-8 encoding. */
function isWellFormed(s: string): boolean {
  return !/\p{Surrogate}/u.test(s);
}

/** Reads fields from a msgpack Map (decode) or from an own-property of a plain object (encode). */
function fieldSource(value: unknown): FieldSource | undefined {
  if (value instanceof Map) return (key): unknown => (value as Map<unknown, unknown>).get(key);
  if (typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)) {
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return undefined;
    return (key) => (Object.prototype.hasOwnProperty.call(value, key) ? (value as Record<string, unknown>)[key] : undefined);
  }
  return undefined;
}

/**
 * A message of `type` from its fields. An optional field that is absent takes its default;
 * `forWire` leaves out every optional field whose value is its default (canonical form).
 */
function build(type: MessageType, get: FieldSource, forWire = false): Message {
  const schema = MESSAGE_SCHEMAS[type];
  const out: Record<string, unknown> = { type };
  const defaulted: string[] = [];
  for (const [field, spec] of Object.entries(schema.fields)) {
    const value = get(field);
    if (value === undefined && spec.kind === 'optional') {
      out[field] = spec.default;
      defaulted.push(field);
      continue;
    }
    if (value === undefined) throw invalid(type, field, 'a value (the field is required)', value);
    out[field] = validateValue(type, field, spec, value);
    if (spec.kind === 'optional' && out[field] === spec.default) defaulted.push(field);
  }
  const problem = schema.check?.(out);
  if (problem !== undefined) {
    throw new HandoffProtocolError(ProtocolErrorCode.InvalidField, `${type}: ${problem}`, { messageType: type });
  }
  if (forWire && defaulted.length > 0) return Object.fromEntries(Object.entries(out).filter(([field]) => !defaulted.includes(field))) as unknown as Message;
  return out as unknown as Message;
}

/**
 * Validates a decoded payload (a msgpack map) received on a channel of direction `direction`
 * and returns a fresh message object holding only the schema's fields.
 * @throws HandoffProtocolError MALFORMED_PAYLOAD, UNKNOWN_MESSAGE, WRONG_DIRECTION or INVALID_FIELD.
 */
export function parseMessage<D extends Direction>(payload: unknown, direction: D): MessageOf<D> {
  const get = payload instanceof Map ? (key: string): unknown => payload.get(key) : undefined;
  if (!get) {
    throw new HandoffProtocolError(ProtocolErrorCode.MalformedPayload, `payload is ${describe(payload)}, expected a msgpack map with a "type" key`);
  }
  const tag = get('type');
  if (typeof tag !== 'string') {
    throw new HandoffProtocolError(ProtocolErrorCode.MalformedPayload, `payload's "type" is ${describe(tag)}, expected a message type string`);
  }
  if (!isMessageType(tag)) {
    throw new HandoffProtocolError(
      ProtocolErrorCode.UnknownMessage,
      `unknown message type ${describe(tag)}; protocol v1 knows ${MESSAGE_TYPES.join(', ')}`,
      { messageType: tag.slice(0, 64) },
    );
  }
  checkDirection(tag, direction);
  return build(tag, get) as MessageOf<D>;
}

function checkDirection(type: MessageType, direction: Direction): void {
  if (!MESSAGE_SCHEMAS[type].directions.includes(direction)) {
    throw new HandoffProtocolError(
      ProtocolErrorCode.WrongDirection,
      `${type} is not sent ${direction === 'toSupervisor' ? 'by a daemon to the supervisor' : 'by the supervisor to a daemon'}`,
      { messageType: type, direction },
    );
  }
}

/**
 * Validates a message about to be sent in `direction` and returns its wire form: a plain
 * object with `type` first and the fields in schema order (so encodings are deterministic).
 * @throws HandoffProtocolError INVALID_ARGUMENT when the message is not a valid v1 message.
 */
export function toWire(message: Message, direction: Direction): Record<string, unknown> {
  try {
    const get = fieldSource(message);
    const tag = get?.('type');
    if (!get || typeof tag !== 'string' || !isMessageType(tag)) {
      throw new HandoffProtocolError(ProtocolErrorCode.UnknownMessage, `not a v1 message: ${describe(tag)}`);
    }
    checkDirection(tag, direction);
    return build(tag, get, true) as unknown as Record<string, unknown>;
  } catch (error) {
    if (!(error instanceof HandoffProtocolError)) throw error;
    throw new HandoffProtocolError(ProtocolErrorCode.InvalidArgument, `refusing to send an invalid message: ${error.message}`, error.details, { cause: error });
  }
}
