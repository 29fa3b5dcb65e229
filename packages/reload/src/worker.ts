/**
 * The worker thread that runs one version of a plugin (worker mode): loads the module given
 * in `workerData`, says `ready` (or why it refuses the module), then answers calls
 * `{id, method, args}` with `{id, ok, value}` or `{id, ok: false, error}` until the host
 * asks it to `dispose` and terminates it.
 *
 * A plugin method's own error is an answer, not a crash: only a death of the thread
 * (process.exit, an uncaught exception, out of memory) is, and the host sees it as the
 * worker's 'exit'.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { disposeModule, errorShape, isThenable, loadModule } from './module-load.js';
import type { PluginFunction } from './module-load.js';
import type { CallMessage, FromWorker, ToWorker, WorkerInit } from './wire.js';

if (parentPort === null) throw new Error('@handoff/reload: worker.js runs only as a plugin worker thread');
const port = parentPort;
const init = workerData as WorkerInit;

function post(message: FromWorker): void {
  port.postMessage(message);
}

/** Sends a call's value, or why it cannot be sent (a value that is not structured-cloneable). */
function answer(id: number, value: unknown): void {
  try {
    post({ id, ok: true, value });
  } catch (error) {
    post({ id, ok: false, error: { ...errorShape(error), message: `the result cannot be sent to the host (it must be structured-cloneable): ${errorShape(error).message}` } });
  }
}

function fail(id: number, error: unknown): void {
  post({ id, ok: false, error: errorShape(error) });
}

let functions: Readonly<Record<string, PluginFunction>> | null = null;
let loadedModule: Readonly<Record<string, unknown>> | null = null;

function onCall(call: CallMessage): void {
  const fn = functions?.[call.method];
  if (fn === undefined) {
    fail(call.id, new Error(`${call.method}() is not a method of this plugin`));
    return;
  }
  let result: unknown;
  try {
    result = fn(...call.args);
  } catch (error) {
    fail(call.id, error);
    return;
  }
  // Answer a synchronous result in this turn: no promise hop for the common fast method.
  if (!isThenable(result)) {
    answer(call.id, result);
    return;
  }
  result.then(
    (value) => {
      answer(call.id, value);
    },
    (error: unknown) => {
      fail(call.id, error);
    },
  );
}

// Listen before loading: the port keeps this thread alive, so that a module whose load never
// settles (a top-level await on nothing) is a hang the host's load timeout ends, and not an
// exit that would look like a crash.
port.on('message', (message: ToWorker) => {
  if ('type' in message) {
    void (loadedModule === null ? Promise.resolve(null) : disposeModule(loadedModule)).then((error) => {
      post({ type: 'disposed', error });
    });
    return;
  }
  onCall(message);
});

const outcome = await loadModule(init.url, init.methods, init.options);
if (outcome.ok) {
  functions = outcome.functions;
  loadedModule = outcome.module;
  post({ type: 'ready', version: outcome.version });
} else {
  post({ type: 'loadFailed', cause: outcome.cause, message: outcome.message });
}
