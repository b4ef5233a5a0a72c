import { Rng } from '../../src/engine/random';

/** Seeded float32 numbers uniform in [-scale, scale), from the engine's own generator so failures reproduce. */
export function uniform(n: number, seed: number, scale = 1): Float32Array {
  return Float32Array.from(new Rng(seed).uniform(n), (u) => (2 * u - 1) * scale);
}
