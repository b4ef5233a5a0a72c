import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { gradients } from '../../src/engine/autodiff';
import {
  abs, add, cast, concat, conv, convTranspose, cos, div, erf, exp, expand, gather, gelu, gemm, Graph, groupNorm, IDENTITY,
  layerNorm, log, matmul, mul, multiHeadAttention, neg, OPS, pad, pow, reciprocal, reduceMax, reduceMean, reduceSum, reshape, serialize, type Shape,
  sigmoid, silu, sin, sizeOf, slice, softmax, split, sqrt, squeeze, sub, tanh, type Tensor, transpose, unsqueeze,
  upsampleNearest, where,
} from '../../src/engine/graph';

/** Seeded uniform numbers (mulberry32), so every run checks the same shapes and values. */
class Random {
  constructor(private state: number) {}
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
  int(lo: number, hi: number): number {
    return Math.floor(this.uniform(lo, hi + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
}

type FloatDType = 'float32' | 'float64';
type Domain = 'any' | 'positive' | 'nonzero';

interface Case {
  name: string;
  /** float64 where onnxruntime's CPU kernels have it; Conv, ConvTranspose, Resize and Erf are float32-only. */
  dtype: FloatDType;
  shapes: (r: Random) => Shape[];
  build: (xs: Tensor[], r: Random) => Tensor | Tensor[];
  domain?: Domain;
  /** Linear in each input element: central differences are then exact for any step. */
  linear?: boolean;
  /** A bound on |d^3 y / dx^3| over the domain, which scales the truncation error (default 1). */
  curvature?: number;
  /** A fixed finite-difference step, for piecewise-linear ops that must not cross a kink. */
  step?: number;
}

const values = (r: Random, n: number, domain: Domain) =>
  Array.from({ length: n }, () => {
    if (domain === 'positive') return r.uniform(0.5, 1.5);
    const v = r.uniform(-1, 1);
    return domain === 'nonzero' ? Math.sign(v || 1) * (0.25 + Math.abs(v)) : v;
  });

const typed = (dtype: FloatDType, data: number[]) => (dtype === 'float64' ? Float64Array.from(data) : Float32Array.from(data));

function constantOf(like: Tensor, r: Random, shape: Shape = like.shape): Tensor {
  return like.graph.constant(like.dtype, shape, typed(like.dtype as FloatDType, values(r, sizeOf(shape), 'any')));
}

const bools = (g: Graph, r: Random, shape: Shape) => g.constant('bool', shape, Uint8Array.from({ length: sizeOf(shape) }, () => (r.next() < 0.5 ? 1 : 0)));
const indices = (g: Graph, shape: Shape, bound: number, r: Random) =>
  g.constant('int64', shape, BigInt64Array.from({ length: sizeOf(shape) }, () => BigInt(r.int(-bound, bound - 1))));

const d = (r: Random) => r.int(1, 4);
const unary = (name: string, f: (x: Tensor) => Tensor, curvature: number, domain: Domain = 'any', dtype: FloatDType = 'float64'): Case =>
  ({ name, dtype, domain, curvature, linear: curvature === 0, shapes: (r) => [[d(r), r.int(2, 5)]], build: ([x]) => f(x) });

const CASES: Case[] = [
  { name: 'Add broadcasting both ways', dtype: 'float64', shapes: (r) => { const b = r.int(2, 4); return [[d(r), b, 3], [b, 1]]; }, build: ([a, b]) => add(a, b) },
  { name: 'Sub broadcasting', dtype: 'float64', shapes: (r) => { const c = r.int(2, 4); return [[2, 1, c], [r.int(2, 3), c]]; }, build: ([a, b]) => sub(a, b) },
  { name: 'Mul broadcasting a vector', dtype: 'float64', shapes: (r) => { const c = r.int(2, 5); return [[d(r), c], [c]]; }, build: ([a, b]) => mul(a, b) },
  { name: 'Div broadcasting a column', dtype: 'float64', domain: 'positive', curvature: 150, shapes: (r) => { const a = r.int(2, 4); return [[a, d(r) + 1], [a, 1]]; }, build: ([a, b]) => div(a, b) },
  { name: 'Pow tensor ^ tensor', dtype: 'float64', domain: 'positive', curvature: 20, shapes: (r) => { const c = r.int(2, 4); return [[d(r), c], [c]]; }, build: ([a, b]) => pow(a, b) },
  { name: 'Pow tensor ^ constant', dtype: 'float64', curvature: 6, shapes: (r) => [[d(r), r.int(2, 5)]], build: ([a]) => pow(a, 3) },
  unary('Neg', neg, 0),
  unary('Sqrt', sqrt, 3, 'positive'),
  unary('Exp', exp, 3),
  unary('Log', log, 16, 'positive'),
  unary('Sigmoid', (x) => sigmoid(mul(x, 3)), 4),
  unary('Tanh', (x) => tanh(mul(x, 2)), 16),
  unary('Erf', (x) => erf(mul(x, 2)), 18, 'any', 'float32'),
  unary('Sin', (x) => sin(mul(x, 3)), 27),
  unary('Cos', (x) => cos(mul(x, 3)), 27),
  { ...unary('Abs', abs, 0, 'nonzero'), step: 0.125 },
  unary('Reciprocal', reciprocal, 96, 'positive'),
  unary('Identity', (x) => x.graph.apply(IDENTITY, [x])[0], 0),
  unary('Cast (float32 -> float64)', (x) => mul(cast(x, 'float64'), 3), 0, 'any', 'float32'),
  { name: 'Softmax', dtype: 'float64', curvature: 8, shapes: (r) => [[d(r), r.int(2, 4), r.int(2, 5)]], build: ([x], r) => softmax(mul(x, 2), r.pick([-1, 1, 0])) },
  { name: 'ReduceSum', dtype: 'float64', shapes: (r) => [[d(r), r.int(2, 3), r.int(2, 4)]], build: ([x], r) => reduceSum(x, r.pick([[1], [0, 2], [-1]]), r.next() < 0.5) },
  { name: 'ReduceMean', dtype: 'float64', shapes: (r) => [[d(r), r.int(2, 3), r.int(2, 4)]], build: ([x], r) => reduceMean(x, r.pick([[1], [0, 2], [-1]]), r.next() < 0.5) },
  { name: 'ReduceMax', dtype: 'float64', shapes: (r) => [[d(r), r.int(2, 3), r.int(2, 4)]], build: ([x], r) => reduceMax(x, r.pick([[1], [0, 2]]), r.next() < 0.5) },
  { name: 'MatMul batched, broadcast batch', dtype: 'float64', shapes: (r) => { const [m, k, n] = [d(r), r.int(2, 4), d(r)]; return [[2, 1, m, k], [3, k, n]]; }, build: ([a, b]) => matmul(a, b) },
  { name: 'MatMul activations x weight', dtype: 'float64', shapes: (r) => { const k = r.int(2, 4); return [[2, d(r), k], [k, r.int(2, 3)]]; }, build: ([a, b]) => matmul(a, b) },
  { name: 'MatMul vector x matrix', dtype: 'float64', shapes: (r) => { const k = r.int(2, 4); return [[k], [2, k, d(r)]]; }, build: ([a, b]) => matmul(a, b) },
  { name: 'MatMul matrix x vector', dtype: 'float64', shapes: (r) => { const k = r.int(2, 4); return [[d(r), k], [k]]; }, build: ([a, b]) => matmul(a, b) },
  { name: 'MatMul vector x vector', dtype: 'float64', shapes: (r) => { const k = r.int(2, 5); return [[k], [k]]; }, build: ([a, b]) => matmul(a, b) },
  ...[[false, false], [false, true], [true, false], [true, true]].map(([transA, transB]): Case => ({
    name: `Gemm transA=${transA} transB=${transB}`,
    dtype: 'float64',
    linear: true,
    shapes: (r) => {
      const [m, k, n] = [d(r), r.int(2, 4), r.int(2, 3)];
      return [transA ? [k, m] : [m, k], transB ? [n, k] : [k, n], [n]];
    },
    build: ([a, b, c]) => gemm(a, b, c, { transA, transB, alpha: 0.7, beta: 1.3 }),
  })),
  { name: 'Reshape', dtype: 'float64', shapes: () => [[2, 3, 4]], build: ([x]) => reshape(x, [4, -1]) },
  { name: 'Transpose', dtype: 'float64', shapes: (r) => [[2, r.int(1, 3), 4]], build: ([x]) => transpose(x, [2, 0, 1]) },
  { name: 'Concat', dtype: 'float64', shapes: (r) => [[2, r.int(1, 3)], [2, r.int(1, 3)], [2, 1]], build: (xs) => concat(xs, 1) },
  { name: 'Split with an unused output', dtype: 'float64', shapes: (r) => [[r.int(5, 7), 2]], build: ([x]) => { const [a, , c] = split(x, [2, 1, x.shape[0] - 3], 0); return [a, c]; } },
  { name: 'Slice', dtype: 'float64', shapes: (r) => [[r.int(4, 6), r.int(5, 7)]], build: ([x]) => slice(x, [1, -4], [3, 100], [0, 1]) },
  { name: 'Slice with steps', dtype: 'float64', shapes: (r) => [[r.int(5, 7), r.int(6, 9)]], build: ([x], r) => slice(x, [0, r.int(0, 2)], [5, 100], [0, 1], [2, r.int(2, 3)]) },
  { name: 'Squeeze', dtype: 'float64', shapes: (r) => [[d(r), 1, 3]], build: ([x]) => squeeze(x, [1]) },
  { name: 'Unsqueeze', dtype: 'float64', shapes: (r) => [[d(r), 3]], build: ([x]) => unsqueeze(x, [0, 2]) },
  { name: 'Expand', dtype: 'float64', shapes: (r) => [[r.int(2, 3), 1]], build: ([x]) => expand(x, [2, x.shape[0], 3]) },
  { name: 'Pad, growing and cropping', dtype: 'float64', shapes: (r) => [[r.int(3, 4), r.int(3, 5)]], build: ([x]) => pad(x, [1, -1, 0, 2]) },
  { name: 'Where broadcasting', dtype: 'float64', shapes: (r) => { const b = r.int(2, 4); return [[d(r) + 1, b], [b]]; }, build: ([a, b], r) => where(bools(a.graph, r, a.shape), a, b) },
  { name: 'Gather rows with repeated indices', dtype: 'float64', shapes: (r) => [[r.int(3, 5), 3]], build: ([x], r) => gather(x, indices(x.graph, [2, 4], x.shape[0], r), 0) },
  { name: 'Gather on axis 1', dtype: 'float64', shapes: (r) => [[2, r.int(3, 5), 2]], build: ([x], r) => gather(x, indices(x.graph, [3], x.shape[1], r), 1) },
  {
    name: 'MultiHeadAttention (com.microsoft), cross-attention shapes', dtype: 'float32', curvature: 8,
    shapes: (r) => { const [batch, width, length] = [d(r), 2 * r.int(1, 3), r.int(2, 4)]; return [[batch, r.int(2, 4), width], [batch, length, width], [batch, length, 4]]; },
    build: ([q, k, v]) => multiHeadAttention(q, k, v, 2, 0.7),
  },
  { name: 'Resize nearest x2', dtype: 'float32', linear: true, shapes: (r) => [[1, 2, r.int(2, 3), r.int(2, 3)]], build: ([x]) => upsampleNearest(x, [1, 1, 2, 2]) },
  { name: 'Resize nearest x3 by x1', dtype: 'float32', linear: true, shapes: () => [[2, 1, 2, 3]], build: ([x]) => upsampleNearest(x, [1, 1, 3, 1]) },
  ...[
    { strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], group: 1 },
    { strides: [2, 2], pads: [1, 0, 1, 1], dilations: [1, 1], group: 1 },
    { strides: [1, 2], pads: [2, 1, 2, 0], dilations: [2, 1], group: 2 },
    { strides: [3, 1], pads: [0, 0, 0, 0], dilations: [1, 2], group: 4 },
    { strides: [1, 1], pads: [0, 1, 2, 1], dilations: [2, 1], group: 2 },
  ].map((options): Case => ({
    name: `Conv ${JSON.stringify(options)}`,
    dtype: 'float32',
    linear: true,
    shapes: (r) => [[2, 4, r.int(6, 8), r.int(6, 8)], [options.group * 2, 4 / options.group, 3, 3], [options.group * 2]],
    build: ([x, w, b]) => conv(x, w, b, options),
  })),
  { name: 'Conv 1x1 padded beyond its reach', dtype: 'float32', linear: true, shapes: () => [[1, 3, 4, 5], [2, 3, 1, 1]], build: ([x, w]) => conv(x, w, undefined, { pads: [1, 0, 0, 1] }) },
  { name: 'Conv 1-D', dtype: 'float32', linear: true, shapes: (r) => [[2, 3, r.int(7, 9)], [2, 3, 3]], build: ([x, w]) => conv(x, w, undefined, { strides: [2], pads: [1, 1] }) },
  ...[
    { strides: [2, 2], pads: [1, 1, 1, 1], dilations: [1, 1], group: 1, outputPadding: [1, 1] },
    { strides: [2, 1], pads: [0, 1, 1, 0], dilations: [1, 2], group: 2, outputPadding: [1, 0] },
  ].map((options): Case => ({
    name: `ConvTranspose ${JSON.stringify(options)}`,
    dtype: 'float32',
    linear: true,
    shapes: (r) => [[2, 4, r.int(3, 4), r.int(3, 4)], [4, 3, 3, 3], [3 * options.group]],
    build: ([x, w, b]) => convTranspose(x, w, b, options),
  })),
  { name: 'layerNorm (composed)', dtype: 'float64', curvature: 100, shapes: (r) => [[d(r), r.int(3, 6)]], build: ([x]) => layerNorm(mul(x, 2), constantOf(x, new Random(1), [x.shape[1]]), constantOf(x, new Random(2), [x.shape[1]]), 1e-5) },
  { name: 'layerNorm weight and bias', dtype: 'float64', curvature: 100, shapes: (r) => { const c = r.int(3, 5); return [[2, c], [c], [c]]; }, build: ([x, w, b]) => layerNorm(x, w, b, 1e-5) },
  { name: 'groupNorm (composed)', dtype: 'float64', curvature: 100, shapes: () => [[2, 4, 2, 3], [4], [4]], build: ([x, w, b]) => groupNorm(x, 2, w, b, 1e-5) },
  unary('gelu (composed)', (x) => gelu(mul(x, 2)), 8, 'any', 'float32'),
  unary('silu (composed)', (x) => silu(mul(x, 2)), 8),
];

const UNIT_ROUNDOFF: Record<FloatDType, number> = { float64: 2 ** -53, float32: 2 ** -24 };

/**
 * Central differences (L(x + h) - L(x - h)) / 2h of L = sum(r * y), y evaluated by onnxruntime and
 * L summed in float64 here. Their error bound sets the tolerance: rounding contributes about
 * u * S / h (S = sum of |r| (|y+| + |y-| + 1) over the outputs that changed, u the dtype's unit
 * roundoff, with headroom for accumulation inside the operator), truncation h^2 * M3 * S / 6 with M3 the case's curvature bound (zero for
 * linear ops, which therefore take h = 1).
 */
function stepAndTolerance(c: Case, scale: number) {
  const u = UNIT_ROUNDOFF[c.dtype];
  const h = c.step ?? (c.linear ? 1 : Math.cbrt(u));
  const tolerance = 64 * u * scale / h + (c.linear ? 0 : (h * h * (c.curvature ?? 1) * scale) / 6);
  return { h, tolerance };
}

const sessions: ort.InferenceSession[] = [];
afterAll(async () => {
  for (const s of sessions) await s.release();
});

/** Every op type the cases' forward graphs use (filled as they build). */
const covered = new Set<string>();

async function check(c: Case, seed: number) {
  const r = new Random(seed);
  const g = new Graph('gradcheck');
  const inputs = c.shapes(r).map((shape, i) => g.input(`x${i}`, c.dtype, shape));
  const ys = [c.build(inputs, r)].flat();
  for (const node of g.nodes) covered.add(node.op);
  const weights = ys.map((y) => constantOf(y, r));
  const terms = ys.map((y, i) => reduceSum(mul(y, weights[i]), [...y.shape.keys()], false));
  const loss = terms.reduce((a, b) => add(a, b));
  const grads = gradients(g, loss, inputs);
  ys.forEach((y, i) => g.output(y, `y${i}`));
  grads.forEach((grad, i) => g.output(grad, `grad${i}`));
  const session = await ort.InferenceSession.create(serialize(g));
  sessions.push(session);

  const rWeights = weights.map((w) => Array.from(g.constants.get(w)!.data as Float64Array | Float32Array));
  const x = inputs.map((t) => typed(c.dtype, values(r, sizeOf(t.shape), c.domain ?? 'any')));
  const run = async (feeds: (Float32Array | Float64Array)[]) => {
    const out = await session.run(Object.fromEntries(inputs.map((t, i) => [t.name, new ort.Tensor(c.dtype, feeds[i], [...t.shape])])));
    return { ys: ys.map((_, k) => out[`y${k}`].data as Float64Array), grads: inputs.map((_, i) => out[`grad${i}`].data as Float64Array) };
  };
  const base = await run(x);
  let checked = 0;
  for (let i = 0; i < inputs.length; i++) {
    expect(base.grads[i].length).toBe(x[i].length);
    const positions = [...x[i].keys()].filter(() => x[i].length <= 40 || r.next() < 40 / x[i].length);
    for (const j of positions) {
      const plus = x.map((v) => v.slice());
      const minus = x.map((v) => v.slice());
      const h = stepAndTolerance(c, 0).h;
      plus[i][j] += h;
      minus[i][j] -= h;
      const [yPlus, yMinus] = [(await run(plus)).ys, (await run(minus)).ys];
      // Outputs the perturbation leaves unchanged cancel exactly; only the others carry rounding error.
      let difference = 0;
      let scale = 0;
      ys.forEach((_, k) => yPlus[k].forEach((v, n) => {
        if (v === yMinus[k][n]) return;
        difference += rWeights[k][n] * v - rWeights[k][n] * yMinus[k][n];
        scale += Math.abs(rWeights[k][n]) * (Math.abs(v) + Math.abs(yMinus[k][n]) + 1);
      }));
      const fd = difference / (2 * h);
      const analytic = base.grads[i][j];
      const { tolerance } = stepAndTolerance(c, scale);
      if (Math.abs(fd - analytic) > tolerance) {
        throw new Error(`${c.name} (seed ${seed}): d loss / d x${i}[${j}] is ${analytic}, finite differences give ${fd} (tolerance ${tolerance})`);
      }
      checked++;
    }
  }
  expect(checked).toBeGreaterThan(0);
}

describe('gradient rules against central finite differences', () => {
  for (const c of CASES) {
    it(c.name, async () => {
      for (const seed of [1, 2, 3]) await check(c, seed);
    });
  }

  it('accumulates many repeated Gather indices exactly, on all threads', async () => {
    // Counts of each row fit float32 exactly, so a lost or doubled update would show.
    const [rows, count] = [3, 200_000];
    const g = new Graph();
    const table = g.input('table', 'float32', [rows, 16]);
    const ids = g.constant('int64', [count], BigInt64Array.from({ length: count }, (_, i) => BigInt(i % rows)));
    g.output(gradients(g, reduceSum(gather(table, ids), [0, 1], false), [table])[0], 'grad');
    const session = await ort.InferenceSession.create(serialize(g), { intraOpNumThreads: 4 });
    sessions.push(session);
    const { grad } = await session.run({ table: new ort.Tensor('float32', new Float32Array(rows * 16), [rows, 16]) });
    const expected = [...Array(rows).keys()].flatMap((row) => Array(16).fill(Math.ceil((count - row) / rows)));
    expect(Array.from(grad.data as Float32Array)).toEqual(expected);
  });

  it('covers every operator that has a gradient rule', () => {
    const withRules = [...OPS.values()].filter((op) => op.grad).map((op) => op.type);
    expect(withRules.filter((type) => !covered.has(type))).toEqual([]);
  });
});
