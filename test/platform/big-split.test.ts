import { describe, expect, it } from 'vitest';
import { splitPriorImages, type LearnedConcept, type SplitPart } from '../../src/services/big-split';

const concept = (token: string, category: string): LearnedConcept => ({ conceptId: `id-${token}`, token, category });
const sum = (parts: SplitPart[]) => parts.reduce((total, part) => total + part.images, 0);
/** `class:dog` or `sks:dog` -> images, to compare splits at a glance. */
const summary = (parts: SplitPart[]) =>
  Object.fromEntries(parts.map((part) => [`${part.source === 'class' ? 'class' : part.token}:${part.category}`, part.images]));

/** The share BIG.md describes, in floating point, written independently of the implementation. */
function exactQuota(request: { priorImages: number; category: string; learned: LearnedConcept[] }, part: SplitPart): number {
  const categories = new Set([request.category, ...request.learned.map((c) => c.category)]);
  const share = categories.size === 1 ? request.priorImages
    : part.category === request.category ? request.priorImages / 2 : request.priorImages / 2 / (categories.size - 1);
  const instances = request.learned.filter((c) => c.category === part.category).length;
  if (instances === 0) return share;
  return part.source === 'class' ? share / 2 : share / 2 / instances;
}

/** A deterministic generator of awkward inputs: many categories, uneven instance counts. */
function* randomCases(count: number) {
  let state = 12345;
  const next = (n: number) => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state % n;
  };
  for (let c = 0; c < count; c++) {
    const categories = 1 + next(12);
    const learned = Array.from({ length: next(30) }, (_, i) => concept(`t${i}`, `c${next(categories)}`));
    yield { priorImages: next(500), category: `c${next(categories + 1)}`, learned };
  }
}

describe('BIG prior-preservation split', () => {
  it('reproduces the blog’s worked example (P = 400, third dog)', () => {
    const learned = [concept('brc', 'bottle'), concept('sks', 'dog'), concept('mkd', 'bottle'), concept('lnl', 'painting'), concept('rvt', 'dog')];
    const split = splitPriorImages({ priorImages: 400, category: 'dog', learned, meta: true });
    expect(summary(split.parts)).toEqual({
      'class:dog': 100, 'sks:dog': 50, 'rvt:dog': 50,
      'class:bottle': 50, 'brc:bottle': 25, 'mkd:bottle': 25,
      'class:painting': 50, 'lnl:painting': 50,
    });
    expect(split.parts.map((part) => part.source === 'class' ? part.category : part.token)).toEqual(
      ['dog', 'sks', 'rvt', 'bottle', 'brc', 'mkd', 'painting', 'lnl'],
    );
    expect(split.warnings).toEqual([]);
  });

  it('gives c* everything when nothing else is known, and private models plain DreamBooth', () => {
    expect(splitPriorImages({ priorImages: 200, category: 'dog', learned: [], meta: true }).parts).toEqual([
      { source: 'class', category: 'dog', images: 200 },
    ]);
    // Same category only: half class images, half replay.
    expect(summary(splitPriorImages({ priorImages: 201, category: 'dog', learned: [concept('sks', 'dog')], meta: true }).parts)).toEqual({
      'class:dog': 101, 'sks:dog': 100,
    });
    const learned = [concept('sks', 'dog'), concept('brc', 'bottle')];
    expect(splitPriorImages({ priorImages: 300, category: 'cat', learned, meta: false })).toEqual({
      parts: [{ source: 'class', category: 'cat', images: 300 }],
      warnings: [],
    });
  });

  it('rounds by largest remainder: exact shares, parts sum to P, ties in order', () => {
    // P = 30: class:dog 1/2 = 15; six parts of 1/12 = 2.5 each, the three first in order get the 3 left over.
    const learned = [concept('a', 'cat'), concept('b', 'cow'), concept('c', 'pig')];
    const split = splitPriorImages({ priorImages: 30, category: 'dog', learned, meta: true });
    expect(summary(split.parts)).toEqual({
      'class:dog': 15, 'class:cat': 3, 'a:cat': 3, 'class:cow': 3, 'b:cow': 2, 'class:pig': 2, 'c:pig': 2,
    });
    // P = 10: rounding alone leaves c:pig at 0 (5 + five 1s); the floor takes one from class:dog.
    expect(summary(splitPriorImages({ priorImages: 10, category: 'dog', learned, meta: true }).parts)).toEqual({
      'class:dog': 4, 'class:cat': 1, 'a:cat': 1, 'class:cow': 1, 'b:cow': 1, 'class:pig': 1, 'c:pig': 1,
    });
  });

  it('gives every part at least one image whenever P is at least the number of parts', () => {
    const learned = Array.from({ length: 40 }, (_, i) => concept(`t${i}`, `cat${i}`));
    const split = splitPriorImages({ priorImages: 81, category: 'dog', learned, meta: true });
    expect(split.parts).toHaveLength(81);
    expect(split.parts.every((part) => part.images === 1)).toBe(true);
    // Paid for by the category being trained, which the job is told.
    expect(split.warnings).toEqual(['"dog" gets 1 of 81 prior images instead of 40: the other categories\' 80 parts take one image each. Train at least 160 steps to give it its half.']);
    // The original's floor(P / 2 / |O| / 2) would give each of these categories 0 images.
    expect(Math.floor(81 / 2 / 40 / 2)).toBe(0);
  });

  it('warns when P is smaller than the number of parts', () => {
    const learned = Array.from({ length: 10 }, (_, i) => concept(`t${i}`, `cat${i}`));
    const split = splitPriorImages({ priorImages: 12, category: 'dog', learned, meta: true });
    expect(split.parts).toHaveLength(21);
    expect(sum(split.parts)).toBe(12);
    expect(split.parts.filter((part) => part.images === 0)).toHaveLength(14);
    expect(split.parts[0]).toEqual({ source: 'class', category: 'dog', images: 6 });
    expect(split.warnings).toHaveLength(1);
    expect(split.warnings[0]).toMatch(/12 prior images .* 21 parts.*14 get none.*at least 21 steps/);
  });

  it('holds its guarantees on many random inputs', () => {
    for (const request of randomCases(300)) {
      const split = splitPriorImages({ ...request, meta: true });
      expect(sum(split.parts)).toBe(request.priorImages);
      const others = new Set(request.learned.map((c) => c.category).filter((c) => c !== request.category)).size;
      expect(split.parts).toHaveLength(1 + others + request.learned.length);
      const squeezed = split.warnings.filter((warning) => / instead of /.test(warning));
      if (request.priorImages >= split.parts.length) {
        expect(split.parts.every((part) => part.images >= 1)).toBe(true);
        expect(split.warnings).toEqual(squeezed);
      } else {
        expect(split.warnings).toHaveLength((split.parts.some((part) => part.images === 0) ? 1 : 0) + squeezed.length);
      }
      // The current category is told when the floor, not rounding, took its images.
      const own = split.parts.filter((part) => part.category === request.category);
      const owned = own.reduce((total, part) => total + part.images, 0);
      const half = Math.floor(split.parts.length > own.length ? request.priorImages / 2 : request.priorImages);
      expect(squeezed).toHaveLength(owned < half - own.length ? 1 : 0);
      // Where no part needs the one-image floor, each is within one image of its exact share.
      const quotas = split.parts.map((part) => exactQuota(request, part));
      if (quotas.every((q) => q >= 1)) {
        split.parts.forEach((part, i) => expect(Math.abs(part.images - quotas[i])).toBeLessThan(1));
      }
    }
  });

  it('keeps the category of a concept with no photos left, with generated images only, and says so', () => {
    const learned = [{ ...concept('sks', 'dog'), replayable: false }, concept('brc', 'bottle')];
    const split = splitPriorImages({ priorImages: 8, category: 'cat', learned, meta: true });
    expect(summary(split.parts)).toEqual({ 'class:cat': 4, 'class:dog': 2, 'class:bottle': 1, 'brc:bottle': 1 });
    expect(split.warnings).toEqual(['"sks dog" has no stored photos left to replay; its category keeps only generated images.']);
  });

  it('refuses a negative or fractional budget', () => {
    expect(() => splitPriorImages({ priorImages: -1, category: 'dog', learned: [], meta: true })).toThrow(RangeError);
    expect(() => splitPriorImages({ priorImages: 2.5, category: 'dog', learned: [], meta: true })).toThrow(RangeError);
  });
});
