/**
 * Errors of `@handoff/supervisor`: {@link SupervisorError}, a `HandoffError` with a code of
 * {@link SupervisorErrorCode}. Branch on `code`; `instanceof` works across installed copies too.
 */
import { HandoffError, SupervisorErrorCode } from '@handoff/protocol';
import type { ErrorDetails } from '@handoff/protocol';

/** The error class of `@handoff/supervisor`. */
export class SupervisorError extends HandoffError<SupervisorErrorCode> {
  static override readonly brand: string = 'SupervisorError';
  override readonly name: string = 'SupervisorError';

  constructor(code: SupervisorErrorCode, message: string, options: { readonly details?: ErrorDetails; readonly cause?: unknown } = {}) {
    super(code, message, options);
  }
}

export { SupervisorErrorCode };
