/**
 * Errors of `@handoff/core`: {@link CoreError}, a {@link HandoffError} with a code of
 * {@link CoreErrorCode}. Branch on `code`; `instanceof` works across installed copies too.
 */
import { CoreErrorCode, HandoffError } from '@handoff/protocol';
import type { ErrorDetails } from '@handoff/protocol';

/** The error class of `@handoff/core`. */
export class CoreError extends HandoffError<CoreErrorCode> {
  static override readonly brand: string = 'CoreError';
  override readonly name: string = 'CoreError';

  constructor(code: CoreErrorCode, message: string, options: { readonly details?: ErrorDetails; readonly cause?: unknown } = {}) {
    super(code, message, options);
  }
}

export { CoreErrorCode };
