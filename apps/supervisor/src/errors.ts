/**
 * Errors of the supervisor binary: a bad configuration (exit 2) and a second instance (exit
 * 3). Both are `HandoffError`s with a stable code, like every error of handoff.
 */
import { ErrorCode, HandoffError } from '@handoff/protocol';

/** The configuration is invalid: exit code 2. */
export class ConfigError extends HandoffError<typeof ErrorCode.Config> {
  static override readonly brand: string = 'ConfigError';
  override readonly name: string = 'ConfigError';

  constructor(message: string) {
    super(ErrorCode.Config, message);
  }
}

/** Another live supervisor owns the pid file: exit code 3. */
export class AlreadyRunningError extends HandoffError<typeof ErrorCode.AlreadyRunning> {
  static override readonly brand: string = 'AlreadyRunningError';
  override readonly name: string = 'AlreadyRunningError';
  readonly pid: number;

  constructor(message: string, pid: number) {
    super(ErrorCode.AlreadyRunning, message);
    this.pid = pid;
  }
}
