/**
 * The runtime directory holds the trigger socket (and by default the control socket and the
 * pid file). Whoever can write to it can put their own socket in place of the trigger socket
 * and answer an operator's `handoffctl upgrade` with a fake outcome, so it must belong to the
 * supervisor's user and be writable by nobody else.
 */
import { mkdirSync, statSync } from 'node:fs';
import { ConfigError } from './errors.js';

/**
 * Creates `dir` (mode 0700) when missing; otherwise checks its owner and mode.
 * @throws ConfigError saying what is wrong and the command that fixes it.
 */
export function checkRuntimeDir(dir: string, what: string): void {
  let st;
  try {
    st = statSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError(`${what} ${dir} cannot be examined (${(error as NodeJS.ErrnoException).code ?? String(error)}); check the path and its permissions`);
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (mkdirError) {
      throw new ConfigError(`${what} ${dir} does not exist and cannot be created (${(mkdirError as NodeJS.ErrnoException).code ?? String(mkdirError)}); create it (mode 0700) or choose another [sockets] runtime_dir`);
    }
    return;
  }
  if (!st.isDirectory()) throw new ConfigError(`${what} ${dir} is not a directory; choose another [sockets] runtime_dir`);
  const uid = process.getuid?.() ?? st.uid;
  if (st.uid !== uid) {
    throw new ConfigError(`${what} ${dir} is owned by uid ${st.uid}, not by this user (uid ${uid}): its owner could replace the trigger socket; use a directory of your own, or "chown ${uid} ${dir}"`);
  }
  const open = st.mode & 0o022;
  if (open !== 0) {
    const who = open === 0o022 ? 'its group and others' : open === 0o020 ? 'its group' : 'others';
    throw new ConfigError(`${what} ${dir} is writable by ${who} (mode ${(st.mode & 0o777).toString(8).padStart(3, '0')}): they could replace the trigger socket; run "chmod 700 ${dir}"`);
  }
}
