import { z } from 'zod';
import { describeIssues } from '../validation';

/** A model's `config.json` cannot drive a graph: a field is missing, mistyped or unsupported. */
export class ModelConfigError extends Error {
  override readonly name = 'ModelConfigError';
}

/**
 * Validates a parsed `config.json` against a model's schema; unknown keys (training settings, versions)
 * are ignored, the first problems are named in one error.
 */
export function parseModelConfig<T extends z.ZodType>(schema: T, json: unknown, file: string): z.output<T> {
  const result = schema.safeParse(json);
  if (result.success) return result.data;
  throw new ModelConfigError(`${file}: ${describeIssues(result.error, { root: '(root)', limit: 5 })}`);
}
