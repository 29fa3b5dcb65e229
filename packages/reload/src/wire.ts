/**
 * The messages between a plugin's host and the worker running one version of it (the
 * worker's `parentPort`). Internal: both ends ship in this package.
 */

/** `workerData` of a plugin worker. */
export interface WorkerInit {
  /** The module to import (a file: URL). */
  readonly url: string;
  /** The contract: each must be an exported function. */
  readonly methods: readonly string[];
  /** Passed to the module's `setup(options)`. */
  readonly options: unknown;
}

/** A call: answered by a {@link CallResult} with the same id. */
export interface CallMessage {
  readonly id: number;
  readonly method: string;
  readonly args: readonly unknown[];
}

/** Asks the worker to run the module's `dispose()`: answered by {@link DisposedMessage}. */
export interface DisposeMessage {
  readonly type: 'dispose';
}

export type ToWorker = CallMessage | DisposeMessage;

/** An error as it crosses the thread boundary: what the caller's Error is rebuilt from. */
export interface ErrorShape {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
}

export type CallResult = { readonly id: number; readonly ok: true; readonly value: unknown } | { readonly id: number; readonly ok: false; readonly error: ErrorShape };

/** The version loaded (imported, contract checked, `setup` and `selfTest` passed). */
export interface ReadyMessage {
  readonly type: 'ready';
  /** The module's exported `version` string, if it has one. */
  readonly version: string | null;
}

/** The version could not be loaded; `message` says why, without the plugin's name. */
export interface LoadFailedMessage {
  readonly type: 'loadFailed';
  readonly cause: LoadFailureCause;
  readonly message: string;
}

export interface DisposedMessage {
  readonly type: 'disposed';
  /** What `dispose()` threw, if it did. */
  readonly error: string | null;
}

export type FromWorker = CallResult | ReadyMessage | LoadFailedMessage | DisposedMessage;

/** Why a module that was found could not be loaded. */
export type LoadFailureCause = 'contract' | 'load' | 'selfTest';
