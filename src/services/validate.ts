import { z } from 'zod';
import { badInput } from './errors';

/** Parses `value` with `schema`, turning a failure into BAD_USER_INPUT that names the field. */
export function parseInput<T>(schema: z.ZodType<T>, value: unknown, field: string): T {
  const result = schema.safeParse(value);
  if (!result.success) throw badInput(`${field}: ${result.error.issues[0]?.message ?? 'invalid'}`);
  return result.data;
}

const uuid = z.uuid('not a valid ID');

/** IDs are UUIDs; checking first keeps PostgreSQL syntax errors out of responses. */
export function parseId(value: string, field = 'id'): string {
  return parseInput(uuid, value, field);
}
