/**
 * `@handoff/protocol`: wire frames, messages, version negotiation, the pure state machines
 * (the supervisor's lifecycle and its handoff, the incumbent, the successor), the spawn
 * contract and the journal record of the handoff protocol v1. Runtime-neutral (no `node:`
 * imports). The normative specification is PROTOCOL.md beside this package.
 */
export { AbortCode, CoreErrorCode, ErrorCode, HandoffError, HandoffProtocolError, ProtocolErrorCode, SupervisorErrorCode } from './errors.js';
export type { ErrorDetails } from './errors.js';
export { FieldLimits, MESSAGE_SCHEMAS, MESSAGE_TYPES, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, parseMessage, pluginNameProblem, toWire, utf8Length } from './messages.js';
export type {
  Abort,
  Begin,
  Commit,
  Direction,
  Drained,
  FieldSpec,
  Heartbeat,
  Hello,
  HelloAck,
  Message,
  MessageOf,
  MessageSchema,
  MessageType,
  PrepareHandoff,
  Ready,
  Reload,
  ReloadDone,
  ReloadProgress,
  ResumeAfterAbort,
  Role,
  SealComplete,
  SealFailed,
  DrainProgress,
  ConnOffer,
  SealProgress,
  SealReport,
  SealRequest,
  ToDaemonMessage,
  ToSupervisorMessage,
} from './messages.js';
export { DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, FrameDecoder, encodeFrame } from './codec.js';
export type { DecodeResult, DecoderOptions, DecoderState, EncodeOptions } from './codec.js';
export { capabilities, capabilityNames, commonCapabilities, hasCapability, negotiateVersion } from './negotiation.js';
export type { Capability, CapabilityName, VersionRange } from './negotiation.js';
export { explainRevisionGap, revisionsContinue } from './revisions.js';
export { DEFAULT_TIMEOUTS } from './machine.js';
export type { CancelTimer, DaemonConfig, SetTimer, Timeouts, Transition } from './machine.js';
export { SUPERVISOR_FINAL_PHASES, initialSupervisorState, supervisorTransition } from './supervisor-machine.js';
export type { HandoffOutcome, HandoffSpec, OutcomeKind, SupervisorEffect, SupervisorEvent, SupervisorPhase, SupervisorState, SupervisorTimer } from './supervisor-machine.js';
export { canOfferConnections, initialIncumbentState, incumbentTransition } from './incumbent-machine.js';
export type { IncumbentConfig, IncumbentEffect, IncumbentEvent, IncumbentPhase, IncumbentState, IncumbentTimer, SessionState } from './incumbent-machine.js';
export { initialSuccessorState, successorTransition } from './successor-machine.js';
export type { SuccessorConfig, SuccessorEffect, SuccessorEvent, SuccessorPhase, SuccessorState, SuccessorTimer } from './successor-machine.js';
export { DEFAULT_RESTART_POLICY, changeProgram, initialLifecycleState, lifecycleTransition, sameProgram } from './lifecycle-machine.js';
export type {
  DaemonProgram,
  LifecycleEffect,
  LifecycleEvent,
  LifecycleHandoff,
  LifecyclePhase,
  LifecycleState,
  LifecycleTimer,
  Probation,
  ProbationOutcome,
  ProgramChange,
  RememberedVersions,
  RestartPolicy,
  Revert,
  ServingDaemon,
  Settling,
} from './lifecycle-machine.js';
export { JOURNAL_PHASES, encodeJournal, parseJournal } from './journal.js';
export type { JournalPhase, JournalProcess, JournalRecord, JournalVersions } from './journal.js';
export { FAILURE_FILE_MAX, LISTEN_FDS_START, LIST_SEPARATOR, SpawnEnv } from './spawn-contract.js';
