/**
 * Loading one version of a plugin module: import it, check the contract, run its `setup`
 * and its own `selfTest`. The same steps run in a worker (worker mode) and in the host's
 * thread (in-thread mode), so that both modes refuse the same modules for the same reasons.
 */
import type { ErrorShape, LoadFailureCause } from './wire.js';

/** The lifecycle exports of a plugin module: never contract methods. */
export const LIFECYCLE_EXPORTS: readonly string[] = ['version', 'setup', 'selfTest', 'dispose'];

export type PluginFunction = (...args: unknown[]) => unknown;

/** A loaded module, or why it was refused (`message` does not name the plugin). */
export type LoadOutcome =
  | { readonly ok: true; readonly module: Readonly<Record<string, unknown>>; readonly functions: Readonly<Record<string, PluginFunction>>; readonly version: string | null }
  | { readonly ok: false; readonly cause: LoadFailureCause; readonly message: string };

/** "Name: message" of anything thrown (just the message for a plain Error). */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.name === 'Error' || error.name === '' ? error.message : `${error.name}: ${error.message}`;
  return String(error);
}

/** What crosses the thread boundary of a thrown value. */
export function errorShape(error: unknown): ErrorShape {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' ? { name: error.name, message: error.message, code } : { name: error.name, message: error.message };
  }
  return { name: 'Error', message: String(error) };
}

/** The Error a caller gets for an {@link ErrorShape}: the plugin's message, name and code. */
export function errorFromShape(shape: ErrorShape): Error {
  const error = new Error(shape.message);
  error.name = shape.name;
  if (shape.code !== undefined) Object.assign(error, { code: shape.code });
  return error;
}

/** True for anything with a `then` method (a promise from any realm). */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as { then?: unknown }).then === 'function';
}

/**
 * Imports `url` and checks it: each of `methods` an exported function, `setup(options)` and
 * `selfTest()` (when exported) resolved. Never throws: a refusal is an outcome.
 */
export async function loadModule(url: string, methods: readonly string[], options: unknown): Promise<LoadOutcome> {
  let module: Record<string, unknown>;
  try {
    module = (await import(url)) as Record<string, unknown>;
  } catch (error) {
    return { ok: false, cause: 'load', message: `threw at import: ${describeError(error)}` };
  }
  const functions: Record<string, PluginFunction> = Object.create(null) as Record<string, PluginFunction>;
  const missing: string[] = [];
  for (const method of methods) {
    const fn = module[method];
    if (typeof fn === 'function') functions[method] = fn as PluginFunction;
    else missing.push(method);
  }
  if (missing.length > 0) {
    const exported = Object.keys(module).filter((name) => typeof module[name] === 'function' && !LIFECYCLE_EXPORTS.includes(name));
    return {
      ok: false,
      cause: 'contract',
      message: `does not export ${missing.map((m) => `${m}()`).join(', ')} as ${missing.length === 1 ? 'a function' : 'functions'} (the contract: ${methods.join(', ')}; it exports ${exported.length === 0 ? 'no other function' : exported.join(', ')})`,
    };
  }
  if (typeof module.setup === 'function') {
    try {
      await (module.setup as PluginFunction)(options);
    } catch (error) {
      return { ok: false, cause: 'load', message: `setup() threw: ${describeError(error)}` };
    }
  }
  if (typeof module.selfTest === 'function') {
    try {
      await (module.selfTest as PluginFunction)();
    } catch (error) {
      return { ok: false, cause: 'selfTest', message: `failed its own selfTest(): ${describeError(error)}` };
    }
  }
  const version = typeof module.version === 'string' && module.version.trim() !== '' ? module.version.trim() : null;
  return { ok: true, module, functions, version };
}

/** Runs the module's `dispose()` if it exports one; resolves with what it threw, if anything. */
export async function disposeModule(module: Readonly<Record<string, unknown>>): Promise<string | null> {
  if (typeof module.dispose !== 'function') return null;
  try {
    await (module.dispose as PluginFunction)();
    return null;
  } catch (error) {
    return describeError(error);
  }
}
