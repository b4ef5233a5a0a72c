/**
 * The engine's seeded random numbers: initial latents, ancestral-sampler noise, training noise. A seed
 * must reproduce the same image on every machine, so the algorithm is fixed here and must never change:
 *
 * 1. Uniform 32-bit words come from Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
 *    1, 2, 3", SC 2011), the counter-based generator of Random123, cuRAND and JAX. The key is the seed
 *    split into two words (low 32 bits, high 32 bits; seeds are integers 0..2^53-1). Block k encrypts the
 *    counter (k mod 2^32, floor(k / 2^32), 0, 0) and yields its four output words in order; blocks are
 *    used k = 0, 1, 2, ...
 * 2. A uniform double in (0, 1) takes two words a, b: ((a >>> 5) * 2^26 + (b >>> 6) + 0.5) / 2^53.
 * 3. Standard normals come in pairs from two uniforms u1, u2 (four words) by Box-Muller:
 *    r = sqrt(-2 ln u1); z0 = r cos(2 pi u2), z1 = r sin(2 pi u2); z0 is returned first, z1 next.
 *
 * All integer steps are exact; the float steps use IEEE-754 double `Math.log/cos/sin/sqrt`, which V8
 * computes with the same fdlibm-derived code on every platform. Words, uniforms and normals share one
 * stream, and a request never discards numbers, so `normal(3)` then `normal(7)` equals `normal(10)`.
 */

const PHILOX_M0 = 0xd2511f53;
const PHILOX_M1 = 0xcd9e8d57;
const PHILOX_W0 = 0x9e3779b9;
const PHILOX_W1 = 0xbb67ae85;
const TWO_POW_32 = 2 ** 32;

/** High 32 bits of the 64-bit product of two uint32, from 16-bit halves so nothing exceeds 2^53. */
function mulHigh(a: number, b: number): number {
  const aLo = a & 0xffff;
  const aHi = a >>> 16;
  const bLo = b & 0xffff;
  const bHi = b >>> 16;
  const cross = ((aLo * bLo) >>> 16) + (aHi * bLo & 0xffff) + aLo * bHi;
  return (aHi * bHi + ((aHi * bLo) >>> 16) + Math.floor(cross / 65536)) >>> 0;
}

/**
 * One Philox4x32-10 block into `out`: ten rounds over the counter words, bumping the key by the Weyl constants
 * between rounds. Plain locals, no allocation: training draws millions of words a step.
 */
function philoxInto(out: Uint32Array, c0: number, c1: number, c2: number, c3: number, k0: number, k1: number): void {
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    const hi0 = mulHigh(PHILOX_M0, c0);
    const lo0 = Math.imul(PHILOX_M0, c0) >>> 0;
    const hi1 = mulHigh(PHILOX_M1, c2);
    const lo1 = Math.imul(PHILOX_M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

/** One Philox4x32-10 block of a 128-bit counter and 64-bit key, as 32-bit words (Random123's known-answer form). */
export function philox4x32(counter: readonly number[], key: readonly [number, number]): [number, number, number, number] {
  const out = new Uint32Array(4);
  philoxInto(out, counter[0] >>> 0, counter[1] >>> 0, counter[2] >>> 0, counter[3] >>> 0, key[0] >>> 0, key[1] >>> 0);
  return [out[0], out[1], out[2], out[3]];
}

/**
 * Where a generator stands, as plain JSON (doubles round-trip exactly through JSON.stringify): `Rng.fromState`
 * continues the stream from here, so a resumed training run draws what the uninterrupted one would have.
 */
export interface RngState {
  seed: number;
  /** Philox blocks used so far. */
  block: number;
  /** Words of the latest block not yet handed out. */
  words: number[];
  /** The second normal of the latest Box-Muller pair, when not yet handed out. */
  spareNormal: number | null;
}

export class Rng {
  private readonly key: [number, number];
  private block = 0;
  /** The latest block's words; those from `used` on are not yet handed out. */
  private readonly buffer = new Uint32Array(4);
  private used = 4;
  private spareNormal: number | undefined;

  constructor(readonly seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be an integer in 0..2^53-1, got ${seed}`);
    this.key = [seed % TWO_POW_32, Math.floor(seed / TWO_POW_32)];
  }

  /** A copy of where the stream stands. */
  state(): RngState {
    return { seed: this.seed, block: this.block, words: Array.from(this.buffer.subarray(this.used)), spareNormal: this.spareNormal ?? null };
  }

  /** A generator that continues from `state` (from `state()`), checked so a corrupt one fails here, not in a sample. */
  static fromState(state: RngState): Rng {
    const { block, words, spareNormal } = state;
    const word = (w: unknown) => Number.isInteger(w) && (w as number) >= 0 && (w as number) < TWO_POW_32;
    if (!Number.isSafeInteger(block) || block < 0 || !Array.isArray(words) || words.length > 4 || !words.every(word)
      || (spareNormal !== null && !Number.isFinite(spareNormal))) {
      throw new RangeError('not an Rng state');
    }
    const rng = new Rng(state.seed);
    rng.block = block;
    rng.used = 4 - words.length;
    rng.buffer.set(words, rng.used);
    rng.spareNormal = spareNormal ?? undefined;
    return rng;
  }

  nextUint32(): number {
    if (this.used === 4) {
      philoxInto(this.buffer, this.block % TWO_POW_32, Math.floor(this.block / TWO_POW_32), 0, 0, this.key[0], this.key[1]);
      this.block++;
      this.used = 0;
    }
    return this.buffer[this.used++];
  }

  /** A double in the open interval (0, 1) with 53 random bits. */
  nextUniform(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b + 0.5) / 9007199254740992;
  }

  nextNormal(): number {
    if (this.spareNormal !== undefined) {
      const z = this.spareNormal;
      this.spareNormal = undefined;
      return z;
    }
    const radius = Math.sqrt(-2 * Math.log(this.nextUniform()));
    const angle = 2 * Math.PI * this.nextUniform();
    this.spareNormal = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  }

  uniform(length: number): Float64Array {
    const out = new Float64Array(length);
    for (let i = 0; i < length; i++) out[i] = this.nextUniform();
    return out;
  }

  /** Standard normal samples, e.g. `rng.normal(4 * 64 * 64)` for one SD latent. */
  normal(length: number): Float64Array {
    const out = new Float64Array(length);
    for (let i = 0; i < length; i++) out[i] = this.nextNormal();
    return out;
  }

  normalFloat32(length: number): Float32Array {
    const out = new Float32Array(length);
    for (let i = 0; i < length; i++) out[i] = this.nextNormal();
    return out;
  }
}
