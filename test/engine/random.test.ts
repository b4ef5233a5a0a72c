import { describe, expect, it } from 'vitest';
import { Rng, philox4x32 } from '../../src/engine/random';

const N = 100_000;
/** Five standard errors: a correct generator fails such a bound about once in 1.7 million runs. */
const Z = 5;

function mean(xs: Float64Array): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

function variance(xs: Float64Array): number {
  const m = mean(xs);
  return xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1);
}

describe('Philox4x32-10', () => {
  it('matches the Random123 known-answer vectors', () => {
    const hex = (words: number[]) => words.map((w) => w.toString(16).padStart(8, '0')).join(' ');
    expect(hex(philox4x32([0, 0, 0, 0], [0, 0]))).toBe('6627e8d5 e169c58d bc57ac4c 9b00dbd8');
    expect(hex(philox4x32([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff]))).toBe(
      '408f276d 41c83b0e a20bc7c6 6d5451fd',
    );
    expect(hex(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]))).toBe(
      'd16cfe09 94fdcceb 5001e420 24126ea1',
    );
  });
});

describe('Rng', () => {
  it('reproduces a seed exactly, however the draws are split', () => {
    const whole = new Rng(1234).normal(1001);
    const parts = new Rng(1234);
    const split = [...parts.normal(3), ...parts.normal(997), ...parts.normal(1)];
    expect(Array.from(whole)).toEqual(split);
    expect(Array.from(new Rng(1234).normal(1001))).toEqual(Array.from(whole));
  });

  it('draws words from consecutive Philox blocks keyed by the seed', () => {
    const seed = 2 ** 40 + 7;
    const rng = new Rng(seed);
    const words = Array.from({ length: 8 }, () => rng.nextUint32());
    const key: [number, number] = [7, 2 ** 8];
    expect(words).toEqual([...philox4x32([0, 0, 0, 0], key), ...philox4x32([1, 0, 0, 0], key)]);
  });

  it('gives standard normals: mean and variance of 1e5 samples within five standard errors', () => {
    const xs = new Rng(42).normal(N);
    expect(Math.abs(mean(xs))).toBeLessThan(Z / Math.sqrt(N));
    // The sample variance of n normals has standard error sqrt(2 / (n - 1)).
    expect(Math.abs(variance(xs) - 1)).toBeLessThan(Z * Math.sqrt(2 / (N - 1)));
    const fourthMoment = xs.reduce((a, x) => a + x ** 4, 0) / N;
    expect(Math.abs(fourthMoment - 3)).toBeLessThan(Z * Math.sqrt(96 / N)); // Var(x^4) = 105 - 9
  });

  it('gives uniforms in (0, 1) with mean 1/2 and variance 1/12', () => {
    const us = new Rng(7).uniform(N);
    expect(us.every((u) => u > 0 && u < 1)).toBe(true);
    expect(Math.abs(mean(us) - 0.5)).toBeLessThan(Z * Math.sqrt(1 / 12 / N));
    expect(Math.abs(variance(us) - 1 / 12)).toBeLessThan(Z * Math.sqrt(1 / 180 / N)); // Var((u - 1/2)^2) = 1/80 - 1/144
  });

  it('makes two seeds independent: their sample correlation is within five standard errors of 0', () => {
    const a = new Rng(1).normal(N);
    const b = new Rng(2).normal(N);
    expect(Array.from(a.subarray(0, 16))).not.toEqual(Array.from(b.subarray(0, 16)));
    const ma = mean(a);
    const mb = mean(b);
    let cov = 0;
    for (let i = 0; i < N; i++) cov += (a[i] - ma) * (b[i] - mb);
    const correlation = cov / (N - 1) / Math.sqrt(variance(a) * variance(b));
    expect(Math.abs(correlation)).toBeLessThan(Z / Math.sqrt(N));
  });

  it('continues from an exported state, through JSON, exactly where the original stands', () => {
    // Odd counts leave a spare normal and part of a Philox block pending: the state must carry both.
    for (const [uints, normals] of [[0, 0], [1, 3], [6, 1], [3, 0]]) {
      const original = new Rng(2 ** 40 + 7);
      for (let i = 0; i < uints; i++) original.nextUint32();
      original.normal(normals);
      const copy = Rng.fromState(JSON.parse(JSON.stringify(original.state())));
      expect([...copy.normal(5), copy.nextUniform(), copy.nextUint32()]).toEqual([...original.normal(5), original.nextUniform(), original.nextUint32()]);
    }
    expect(() => Rng.fromState({ seed: 1, block: -1, words: [], spareNormal: null })).toThrow(RangeError);
    expect(() => Rng.fromState({ seed: 1, block: 0, words: [2 ** 32], spareNormal: null })).toThrow(RangeError);
  });

  it('rejects seeds that are not integers in 0..2^53-1', () => {
    for (const seed of [-1, 1.5, Number.NaN, 2 ** 53]) expect(() => new Rng(seed)).toThrow(RangeError);
  });
});
