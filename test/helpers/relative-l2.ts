/**
 * Relative L2 error ||actual - expected|| / ||expected||, the fixtures' measure of parity. It lives outside
 * fixtures.ts (which looks for the fixtures when imported) so the GPU bench bundle shares it.
 */
export function relativeL2(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < expected.length; i++) {
    diff += (actual[i] - expected[i]) ** 2;
    norm += expected[i] ** 2;
  }
  return Math.sqrt(diff) / Math.sqrt(norm);
}
