/**
 * fast-check arbitraries for every v1 message, derived from MESSAGE_SCHEMAS so that a new
 * message or field is covered by the property tests without editing them.
 */
import fc from 'fast-check';
import { MESSAGE_SCHEMAS, MESSAGE_TYPES, utf8Length } from './messages.js';
import type { Direction, FieldSpec, Message, MessageType } from './messages.js';

function stringArb(min: number, max: number, pattern?: RegExp): fc.Arbitrary<string> {
  if (pattern) return fc.stringMatching(pattern).filter((s) => s.length >= Math.max(min, 1) && utf8Length(s) <= max);
  return fc
    .string({ unit: 'binary', minLength: min, maxLength: Math.min(max, 40) })
    .filter((s) => utf8Length(s) >= min && utf8Length(s) <= max);
}

/** An arbitrary valid value for one field. */
export function fieldArb(spec: FieldSpec): fc.Arbitrary<unknown> {
  switch (spec.kind) {
    case 'uint':
      return fc.oneof(fc.integer({ min: spec.min, max: Math.min(spec.max, spec.min + 300) }), fc.integer({ min: spec.min, max: spec.max }));
    case 'string':
      return stringArb(spec.min, spec.max, spec.pattern);
    case 'bool':
      return fc.boolean();
    case 'enum':
      return fc.constantFrom(...spec.values);
    case 'uintArray':
      return fc.array(fc.oneof(fc.nat(1000), fc.maxSafeNat()), { maxLength: Math.min(spec.maxItems, 12) });
    case 'stringArray':
      return fc.array(stringArb(0, spec.maxLength), { maxLength: Math.min(spec.maxItems, 6) });
    case 'nullable':
      return fc.option(fieldArb(spec.inner), { nil: null });
    case 'sealReport':
      return fc.record({
        revisions: fieldArb({ kind: 'uintArray', maxItems: 4096 }),
        fingerprint: stringArb(0, 512),
      });
    case 'bin':
      return fc.uint8Array({ maxLength: Math.min(spec.max, 300) });
    case 'optional':
      return fc.oneof(fc.constant(spec.default), fieldArb(spec.inner));
  }
}

/** An arbitrary valid message of `type`. */
export function messageArb(type: MessageType): fc.Arbitrary<Message> {
  const schema = MESSAGE_SCHEMAS[type];
  const fields: Record<string, fc.Arbitrary<unknown>> = {};
  for (const [name, spec] of Object.entries(schema.fields)) fields[name] = fieldArb(spec);
  return fc
    .record(fields)
    .map((record) => ({ type, ...record }) as unknown as Message)
    .filter((m) => schema.check?.(m as unknown as Record<string, unknown>) === undefined);
}

/** An arbitrary valid message with a direction it may travel in. */
export const anyMessage: fc.Arbitrary<{ message: Message; direction: Direction }> = fc
  .constantFrom(...MESSAGE_TYPES)
  .chain((type) =>
    fc.tuple(messageArb(type), fc.constantFrom(...MESSAGE_SCHEMAS[type].directions)).map(([message, direction]) => ({ message, direction })),
  );

/** An arbitrary valid message of one direction. */
export function messageOf(direction: Direction): fc.Arbitrary<Message> {
  const types = MESSAGE_TYPES.filter((t) => MESSAGE_SCHEMAS[t].directions.includes(direction));
  return fc.constantFrom(...types).chain(messageArb);
}
