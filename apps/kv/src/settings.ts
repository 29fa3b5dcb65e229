/**
 * The kv daemon's own configuration file (`KV_CONFIG`, JSON), re-read in place by
 * `handoffctl reload --daemon-config` (runDaemon's `reloadConfig`): an invalid file keeps
 * the settings in force and says why.
 *
 *   { "maxValueBytes": 1048576 }   the largest value a PUT may store (413 beyond); null: no limit
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** The settings in force. */
export interface Settings {
  readonly maxValueBytes: number | null;
  /** A short digest of the file, shown to the operator as what is in force. */
  readonly digest: string;
}

/** Without a file: no limit. */
export const DEFAULT_SETTINGS: Settings = { maxValueBytes: null, digest: 'defaults' };

/** Reads and checks `file`; throws one line naming the file and what is wrong. */
export function readSettings(file: string): Settings {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`${file}: cannot read it (${(error as NodeJS.ErrnoException).code ?? String(error)})`, { cause: error });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file}: not valid JSON (${(error as Error).message})`, { cause: error });
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${file}: expected a JSON object such as {"maxValueBytes": 1048576}`);
  const unknown = Object.keys(raw).filter((k) => k !== 'maxValueBytes');
  if (unknown.length > 0) throw new Error(`${file}: unknown setting ${unknown.map((k) => JSON.stringify(k)).join(', ')}; the kv daemon knows "maxValueBytes"`);
  const max = (raw as { maxValueBytes?: unknown }).maxValueBytes ?? null;
  if (max !== null && (typeof max !== 'number' || !Number.isSafeInteger(max) || max < 0)) {
    throw new Error(`${file}: "maxValueBytes" must be a whole number of bytes ≥ 0, or null for no limit; got ${JSON.stringify(max)}`);
  }
  return { maxValueBytes: max, digest: createHash('sha256').update(text).digest('hex').slice(0, 12) };
}
