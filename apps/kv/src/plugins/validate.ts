/**
 * The kv daemon's default `validate` plugin: every value is accepted. An operator replaces it
 * with a file of their own (`KV_VALIDATE_PLUGIN`) and swaps it in place, without a handoff,
 * with `handoffctl reload validate` (see `@handoff/reload` for the module contract).
 *
 * `validate(key, value)` returns null to accept the write, or one line saying why it is
 * refused (the client gets 422 with it). A thrown error is a failure of the plugin, not a
 * refusal: during a new version's probation, failures roll it back.
 */
export const version = 'builtin';

export function validate(_key: string, _value: string): string | null {
  return null;
}
