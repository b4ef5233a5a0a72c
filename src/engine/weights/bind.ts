import { toFloat32, type StoredTensor } from './safetensors';

/** The checkpoint does not fit the model; `problems` names each tensor at fault. */
export class WeightBindingError extends Error {
  override readonly name = 'WeightBindingError';
  constructor(readonly problems: string[]) {
    const shown = problems.slice(0, 10);
    const more = problems.length > shown.length ? `; and ${problems.length - shown.length} more` : '';
    super(`weights do not fit the model: ${shown.join('; ')}${more}`);
  }
}

const FLOAT_TYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

/**
 * Matches stored tensors to the parameters a model expects, by name and exact shape, widened to
 * float32. All-or-nothing: every expected tensor present, nothing left over, or one error listing
 * every mismatch.
 */
export function bindWeights(expected: ReadonlyMap<string, readonly number[]>, stored: ReadonlyMap<string, StoredTensor>): Map<string, Float32Array> {
  const problems = weightProblems(expected, stored);
  if (problems.length > 0) throw new WeightBindingError(problems);
  return new Map([...expected.keys()].map((name) => [name, toFloat32(stored.get(name)!)]));
}

/**
 * What keeps stored tensors (or just their headers' types and shapes) from binding to a model's
 * parameters: each one missing, unexpected, mis-shaped or not floating-point. Empty when they fit.
 */
export function weightProblems(expected: ReadonlyMap<string, readonly number[]>, stored: ReadonlyMap<string, { dtype: string; shape: readonly number[] }>): string[] {
  const problems: string[] = [];
  for (const [name, shape] of expected) {
    const tensor = stored.get(name);
    if (!tensor) problems.push(`missing ${name}`);
    else if (!sameShape(tensor.shape, shape)) problems.push(`${name} has shape [${tensor.shape}] but the model expects [${shape}]`);
    else if (!FLOAT_TYPES.has(tensor.dtype)) problems.push(`${name} is stored as ${tensor.dtype}, not a floating-point type`);
  }
  for (const name of stored.keys()) if (!expected.has(name)) problems.push(`unexpected ${name}`);
  return problems;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
