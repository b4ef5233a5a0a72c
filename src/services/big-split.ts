/**
 * The prior-preservation split of the BIG metamodel (docs/BIG.md): how a training run's budget of P
 * prior images is shared between generated class images and replayed instance images of concepts the
 * model already knows. Pure: no database, no storage.
 *
 * Shares are exact fractions of P; parts are rounded by the largest-remainder method so they always
 * sum to P, and every part gets at least one image whenever P is at least the number of parts (the
 * original floors each share and starves small ones).
 */

/** A concept the model has already learned, whose stored instance images can be replayed. */
export interface LearnedConcept {
  conceptId: string;
  token: string;
  category: string;
  /** False when no stored photo is left (its owner deleted them): the category stays known, the concept gets no part. */
  replayable?: boolean;
}

export interface SplitRequest {
  /** P, the prior images of the run (one per training step, as the original). */
  priorImages: number;
  /** c*, the category being trained now. */
  category: string;
  /** Concepts learned before, oldest first; ignored for plain (non-meta) DreamBooth. */
  learned: readonly LearnedConcept[];
  /** Metamodels replay earlier concepts; private models use plain DreamBooth. */
  meta: boolean;
}

export type SplitSource =
  /** Images the base model generates for the prompt `a <category>`. */
  | { source: 'class'; category: string }
  /** Stored instance images of an earlier concept, replayed with `a <token> <category>`. */
  | { source: 'instance'; conceptId: string; token: string; category: string };

export type SplitPart = SplitSource & { images: number };

export interface PriorSplit {
  /** c*'s parts first, then each other category in order of first appearance: class, then instances. */
  parts: SplitPart[];
  /** Why the split is worse than intended, for the job's record. */
  warnings: string[];
}

/** An exact share of P: numerator / denominator of the whole budget. */
interface Weighted {
  part: SplitSource;
  numerator: bigint;
  denominator: bigint;
}

export function splitPriorImages(request: SplitRequest): PriorSplit {
  const { priorImages: p, category } = request;
  if (!Number.isSafeInteger(p) || p < 0) throw new RangeError(`priorImages must be a non-negative integer, got ${p}`);
  const weighted = request.meta ? metaShares(category, request.learned) : [{ part: classPart(category), numerator: 1n, denominator: 1n }];
  const counts = apportion(p, weighted);
  const parts = weighted.map(({ part }, i): SplitPart => ({ ...part, images: counts[i] }));

  const warnings = request.meta
    ? request.learned
        .filter((concept) => concept.replayable === false)
        .map((c) => `"${c.token} ${c.category}" has no stored photos left to replay; its category keeps only generated images.`)
    : [];
  const starved = parts.filter((part) => part.images === 0).length;
  if (starved > 0) {
    warnings.push(
      `${p} prior images cannot cover all ${parts.length} parts of the prior-preservation split: ` +
        `${starved} get none. Train at least ${parts.length} steps to replay every earlier concept.`,
    );
  }
  // The one-image floor of many small parts is paid by the largest, the current category's own; below
  // its share by more than rounding (under one image a part), the model learns the new category less.
  const own = parts.filter((part) => part.category === category);
  const others = parts.length - own.length;
  const intended = Math.floor(others > 0 ? p / 2 : p);
  const current = own.reduce((total, part) => total + part.images, 0);
  if (current < intended - own.length) {
    warnings.push(
      `"${category}" gets ${current} of ${p} prior images instead of ${intended}: the other categories' ${others} parts ` +
        `take one image each. Train at least ${2 * others} steps to give it its half.`,
    );
  }
  return { parts, warnings };
}

function classPart(category: string): SplitSource {
  return { source: 'class', category };
}

/** BIG's shares as exact fractions: half to c* (all when nothing else is known), the rest per category. */
function metaShares(current: string, learned: readonly LearnedConcept[]): Weighted[] {
  const byCategory = new Map<string, LearnedConcept[]>([[current, []]]);
  for (const concept of learned) {
    const group = byCategory.get(concept.category) ?? [];
    if (concept.replayable !== false) group.push(concept);
    byCategory.set(concept.category, group);
  }
  const others = byCategory.size - 1;
  const weighted: Weighted[] = [];
  for (const [category, concepts] of byCategory) {
    // The category's share of P: 1, or 1/2 for c* and 1/(2|O|) for each other category.
    const share = others === 0 ? 1n : category === current ? 2n : 2n * BigInt(others);
    if (concepts.length === 0) {
      weighted.push({ part: classPart(category), numerator: 1n, denominator: share });
      continue;
    }
    weighted.push({ part: classPart(category), numerator: 1n, denominator: share * 2n });
    const each = share * 2n * BigInt(concepts.length);
    for (const { conceptId, token } of concepts) {
      weighted.push({ part: { source: 'instance', conceptId, token, category }, numerator: 1n, denominator: each });
    }
  }
  return weighted;
}

/**
 * Largest-remainder (Hamilton) rounding of P * fraction for each part, then a floor of one image per
 * part when P allows it, taken from the parts most above their exact quota.
 */
function apportion(total: number, weighted: readonly Weighted[]): number[] {
  const common = weighted.reduce((acc, w) => lcm(acc, w.denominator), 1n);
  // Quota of part i = total * scaled[i] / common, exactly.
  const scaled = weighted.map((w) => (w.numerator * common) / w.denominator);
  const p = BigInt(total);
  const counts = scaled.map((s) => Number((p * s) / common));
  const remainders = scaled.map((s) => (p * s) % common);
  let left = total - counts.reduce((a, b) => a + b, 0);
  // Ties keep the parts' order, so c* wins them.
  const byRemainder = remainders.map((r, i) => ({ r, i })).sort((a, b) => (a.r === b.r ? a.i - b.i : a.r > b.r ? -1 : 1));
  for (const { i } of byRemainder) {
    if (left === 0) break;
    counts[i]++;
    left--;
  }

  if (total >= weighted.length) {
    // Excess over the exact quota, compared as numerators over `common`.
    const excess = (i: number) => BigInt(counts[i]) * common - p * scaled[i];
    for (let empty = counts.indexOf(0); empty !== -1; empty = counts.indexOf(0)) {
      let donor = -1;
      for (let i = 0; i < counts.length; i++) {
        if (counts[i] >= 2 && (donor === -1 || excess(i) > excess(donor))) donor = i;
      }
      counts[donor]--;
      counts[empty]++;
    }
  }
  return counts;
}

function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

function lcm(a: bigint, b: bigint): bigint {
  return (a / gcd(a, b)) * b;
}
