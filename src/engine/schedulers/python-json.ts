/**
 * Parses JSON written by Python's `json` module, which spells non-finite floats as bare `Infinity`,
 * `-Infinity` and `NaN` (diffusers saves DPM-Solver's `lambda_min_clipped = -inf` that way).
 * String literals are matched first so text inside them is never touched.
 */
export function parsePythonJson(text: string): any {
  const marked = text.replace(/"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)/g, (match, nonFinite?: string) =>
    nonFinite ? `"\\u0000${nonFinite}"` : match,
  );
  return JSON.parse(marked, (_key, value) =>
    typeof value === 'string' && value.startsWith('\u0000') ? Number(value.slice(1)) : value,
  );
}
