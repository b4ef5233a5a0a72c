import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type AdamWOptions, buildTrainStep, compile, compileGradients, compileTrainStep, FlatLayout, gradients, saveBuilt, Trainer, TrainerError,
} from '../../src/engine/autodiff';
import {
  add, gather, Graph, GraphError, linear, mul, reduceMean, reduceSum, scatterAdd, slice, sub, tanh, type Tensor,
} from '../../src/engine/graph';
import { formatShape } from '../../src/engine/graph/shape';
import { EngineWorker, type TensorData } from '../../src/engine/runtime';
import { convAttentionNet } from '../helpers/conv-attention';
import { uniform } from '../helpers/random';

const worker = new EngineWorker({ intraOpThreads: 1 });
afterAll(() => worker.close());

type Float = 'float32' | 'float64';
const arrayOf = (dtype: Float, values: ArrayLike<number>) => (dtype === 'float64' ? Float64Array.from(values) : Float32Array.from(values));

/**
 * loss = 0.5 * sum((w - x)^2) + 1.5 * sum(b^2), so grad w = w - x and grad b = 3 b: the hand
 * computation below needs no autodiff of its own.
 */
function quadratic(dtype: Float) {
  const g = new Graph('quadratic');
  const w0 = [0.5, -1.25, 2, 0.75, -0.1];
  const b0 = [1.5, -0.5];
  const w = g.weight('w', [5], arrayOf(dtype, w0), dtype);
  const b = g.weight('b', [2], arrayOf(dtype, b0), dtype);
  const x = g.input('x', dtype, [5]);
  const d = sub(w, x);
  const loss = add(mul(reduceSum(mul(d, d), [0], false), 0.5), mul(reduceSum(mul(b, b), [0], false), 1.5));
  return { g, loss, w0, b0, x: [0.25, 0.5, -1, 1, 0.3] };
}

/** torch.optim.AdamW's single-tensor step and clip_grad_norm_, in float64. */
function handAdamW(params: number[][], grad: (p: number[][]) => number[][], lrs: number[], options: Required<AdamWOptions>) {
  const [beta1, beta2] = options.betas;
  const m = params.map((p) => p.map(() => 0));
  const v = params.map((p) => p.map(() => 0));
  const norms: number[] = [];
  lrs.forEach((lr, index) => {
    const t = index + 1;
    let grads = grad(params);
    const norm = Math.hypot(...grads.map((g) => Math.hypot(...g)));
    norms.push(norm);
    const coef = Math.min(options.maxGradNorm / (norm + 1e-6), 1);
    grads = grads.map((g) => g.map((e) => e * coef));
    const stepSize = lr / (1 - beta1 ** t);
    const correction2 = Math.sqrt(1 - beta2 ** t);
    params = params.map((p, i) => p.map((value, j) => {
      const gij = grads[i][j];
      m[i][j] += (gij - m[i][j]) * (1 - beta1);
      v[i][j] = v[i][j] * beta2 + gij * (1 - beta2) * gij;
      const decayed = value * (1 - lr * options.weightDecay);
      return decayed - (m[i][j] * stepSize) / (Math.sqrt(v[i][j]) / correction2 + options.eps);
    }));
  });
  return { params, norms };
}

describe('train step', () => {
  for (const [dtype, maxGradNorm, tolerance] of [['float64', Infinity, 1e-14], ['float32', 1.5, 2e-7]] as const) {
    it(`matches torch's AdamW computed by hand over three steps (${dtype}, clip ${maxGradNorm})`, async () => {
      const { g, loss, w0, b0, x } = quadratic(dtype);
      const optimizer = { betas: [0.8, 0.95] as [number, number], eps: 1e-8, weightDecay: 0.1, maxGradNorm };
      const step = compileTrainStep({ graph: g, loss, trainable: ['w', 'b'], optimizer: Number.isFinite(maxGradNorm) ? optimizer : { ...optimizer, maxGradNorm: undefined } });
      const trainer = await Trainer.create(worker, step, { w: arrayOf(dtype, w0), b: arrayOf(dtype, b0) });
      // lr travels as float32: the hand computation uses the same rounded values.
      const lrs = [0.1, 0.05, 0.02].map(Math.fround);
      const norms: number[] = [];
      for (const lr of lrs) norms.push((await trainer.step({ x: { dtype, dims: [5], data: arrayOf(dtype, x) } as TensorData }, lr)).gradNorm);
      const expected = handAdamW([w0, b0], ([w, b]) => [w.map((e, j) => e - x[j]), b.map((e) => 3 * e)], lrs, optimizer);
      if (Number.isFinite(maxGradNorm)) expect(expected.norms.some((n) => n > maxGradNorm)).toBe(true);
      for (const [i, name] of ['w', 'b'].entries()) {
        const actual = Array.from(trainer.param(name));
        actual.forEach((value, j) => expect(Math.abs(value - expected.params[i][j])).toBeLessThanOrEqual(tolerance * (1 + Math.abs(expected.params[i][j]))));
      }
      norms.forEach((n, i) => expect(Math.abs(n - expected.norms[i])).toBeLessThanOrEqual(tolerance * 10 * expected.norms[i]));
      await trainer.dispose();
    });
  }

  it('reports the global gradient norm of a million parameters to float32 rounding (rel 2e-7)', async () => {
    // One float32 sum over these 2^20 squares drifts by 4e-6 relative on one CPU thread; blocked sums stay near 5e-8.
    const n = 1 << 20;
    const g = new Graph('wide');
    const d = sub(g.weight('w', [n]), g.input('x', 'float32', [n]));
    const step = compileTrainStep({ graph: g, loss: mul(reduceSum(mul(d, d), [0], false), 0.5), trainable: ['w'] });
    const w = Float32Array.from({ length: n }, (_, i) => 1.5 + Math.sin(i));
    const x = Float32Array.from({ length: n }, (_, i) => Math.cos(0.7 * i));
    const expected = Math.sqrt(w.reduce((sum, value, i) => sum + Math.fround(value - x[i]) ** 2, 0));
    const trainer = await Trainer.create(worker, step, { w });
    const { gradNorm } = await trainer.step({ x: { dtype: 'float32', dims: [n], data: x } }, 0.1);
    expect(Math.abs(gradNorm - expected) / expected).toBeLessThan(2e-7);
    await trainer.dispose();
  });

  it('runs from a model file with external data as from bytes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'train-step-'));
    const steps = async (compiled: Parameters<typeof Trainer.create>[1]) => {
      const { w0, b0, x } = quadratic('float32');
      const trainer = await Trainer.create(worker, compiled, { w: Float32Array.from(w0), b: Float32Array.from(b0) });
      for (let i = 0; i < 2; i++) await trainer.step({ x: { dtype: 'float32', dims: [5], data: Float32Array.from(x) } }, 0.1);
      const result = [...trainer.param('w')];
      await trainer.dispose();
      return result;
    };
    try {
      const a = quadratic('float32');
      const fromBytes = await steps(compileTrainStep({ graph: a.g, loss: a.loss, trainable: ['w'] }));
      const b = quadratic('float32');
      const saved = saveBuilt(buildTrainStep({ graph: b.g, loss: b.loss, trainable: ['w'] }), join(dir, 'step.onnx'));
      expect(existsSync(`${saved.path}.data`)).toBe(true);
      expect(await steps(saved)).toEqual(fromBytes);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('takes the documented inputs and outputs, and compiles to the same bytes twice', () => {
    const build = () => { const { g, loss } = quadratic('float32'); return compileTrainStep({ graph: g, loss, trainable: ['w'] }); };
    const a = build();
    expect(Buffer.from(a.model).equals(Buffer.from(build().model))).toBe(true);
    expect(a.params.map((p) => p.name)).toEqual(['w']);
    expect(a.batch.map((p) => p.name)).toEqual(['x']);
    const { g, loss } = quadratic('float32');
    compileTrainStep({ graph: g, loss, trainable: ['b', 'w'] });
    expect(g.outputs.map((t) => t.name)).toEqual(['new_params', 'new_m', 'new_v', 'loss', 'grad_norm']);
    expect(g.inputs.map((t) => `${t.name}${formatShape(t.shape)}`)).toEqual(['x[5]', 'params[7]', 'step[]', 'lr[]', 'm[7]', 'v[7]']);
    expect([...g.weights.keys()]).toEqual([]);
  });

  it('packs the trainable weights in order: one Split forward, one Concat of gradients, the optimizer on whole vectors', async () => {
    const g = new Graph('packed');
    const x = g.input('x', 'float32', [3, 4]);
    const init = { 'fc.weight': uniform(8, 1), 'fc.bias': uniform(2, 2), frozen: uniform(2, 3) };
    const h = linear(x, g.weight('fc.weight', [2, 4]), g.weight('fc.bias', [2]));
    const out = mul(h, g.weight('frozen', [2], init.frozen));
    const built = buildTrainStep({ graph: g, loss: reduceMean(mul(out, out), [0, 1], false), trainable: ['fc.weight', 'fc.bias'], optimizer: { maxGradNorm: 1 } });
    const count = (op: string) => g.nodes.filter((n) => n.op === op).length;
    expect([count('Split'), count('Concat'), count('Sqrt')]).toEqual([1, 1, 3]);
    expect(count('Identity')).toBe(5);
    expect(built.packed!.map((p) => p.name)).toEqual(['fc.weight', 'fc.bias']);
    expect([...g.weights.keys()]).toEqual(['frozen']);
    const layout = new FlatLayout(built.packed!);
    const flat = layout.pack({ 'fc.weight': init['fc.weight'], 'fc.bias': init['fc.bias'] });
    expect(Array.from(flat)).toEqual([...init['fc.weight'], ...init['fc.bias']]);
    expect(layout.unpack(flat)).toEqual({ 'fc.weight': init['fc.weight'], 'fc.bias': init['fc.bias'] });
    const trainer = await Trainer.create(worker, compile(built), { 'fc.weight': init['fc.weight'], 'fc.bias': init['fc.bias'] });
    await trainer.step({ x: { dtype: 'float32', dims: [3, 4], data: uniform(12, 4) } }, 0.1);
    // Adam's first step moves every element by about lr, each weight in its own slice.
    for (const name of ['fc.weight', 'fc.bias'] as const) {
      trainer.param(name).forEach((value, i) => expect(Math.abs(Math.abs(value - init[name][i]) - 0.1)).toBeLessThan(0.02));
    }
    expect(() => trainer.param('frozen')).toThrow(/frozen is not a trainable weight/);
    await trainer.dispose();
  });

  it('rejects unknown trainable names and malformed batches with typed errors, changing nothing', async () => {
    const { g, loss, w0, b0 } = quadratic('float32');
    expect(() => compileTrainStep({ graph: g, loss, trainable: ['w', 'nope'] })).toThrow(GraphError);
    expect(() => compileTrainStep({ graph: g, loss, trainable: ['w', 'nope'] })).toThrow(/nope, which is not a weight/);
    g.weight('unused', [3], new Float32Array(3));
    expect(() => compileTrainStep({ graph: g, loss, trainable: ['w', 'unused'] })).toThrow(/unused do not affect the loss/);
    const fresh = quadratic('float32');
    const step = compileTrainStep({ graph: fresh.g, loss: fresh.loss, trainable: ['w', 'b'] });
    const trainer = await Trainer.create(worker, step, { w: Float32Array.from(w0), b: Float32Array.from(b0) });
    await expect(trainer.step({ x: { dtype: 'float32', dims: [4], data: new Float32Array(4) } }, 0.1)).rejects.toThrow(TrainerError);
    await expect(trainer.step({}, 0.1)).rejects.toThrow(/batch input x must be float32\[5\]/);
    expect(trainer.steps).toBe(0);
    expect(Array.from(trainer.param('w'))).toEqual(Array.from(Float32Array.from(w0)));
    await trainer.step({ x: { dtype: 'float32', dims: [5], data: new Float32Array(5) } }, 0.1);
    expect(trainer.steps).toBe(1);
    const x = { x: { dtype: 'float32', dims: [5], data: new Float32Array(5) } } as Record<string, TensorData>;
    const first = trainer.step(x, 0.1);
    await expect(trainer.step(x, 0.1)).rejects.toThrow(/already running/);
    await first;
    expect(trainer.steps).toBe(2);
    await trainer.dispose();
  });

  it('continues from a checkpoint exactly where an uninterrupted run would be', async () => {
    const { g, loss, w0, b0, x } = quadratic('float32');
    const step = compileTrainStep({ graph: g, loss, trainable: ['w', 'b'] });
    const batch = { x: { dtype: 'float32', dims: [5], data: Float32Array.from(x) } } as Record<string, TensorData>;
    const lrs = [0.1, 0.05, 0.2, 0.02, 0.1];
    const straight = await Trainer.create(worker, step, { w: Float32Array.from(w0), b: Float32Array.from(b0) });
    for (const lr of lrs) await straight.step(batch, lr);
    const first = await Trainer.create(worker, step, { w: Float32Array.from(w0), b: Float32Array.from(b0) });
    for (const lr of lrs.slice(0, 2)) await first.step(batch, lr);
    const checkpoint = first.checkpoint();
    await first.step(batch, 1); // the checkpoint is a copy: later steps do not reach it
    expect(checkpoint.steps).toBe(2);
    const resumed = await Trainer.create(worker, step, checkpoint);
    expect(resumed.steps).toBe(2);
    for (const lr of lrs.slice(2)) await resumed.step(batch, lr);
    expect(Array.from(resumed.param('w'))).toEqual(Array.from(straight.param('w')));
    expect(Array.from(resumed.param('b'))).toEqual(Array.from(straight.param('b')));
    const { m, ...lacking } = checkpoint;
    await expect(Trainer.create(worker, step, { ...lacking, m: { w: m.w } })).rejects.toThrow(/checkpoint value of b must be a float32 array of 2/);
    await Promise.all([straight, first, resumed].map((t) => t.dispose()));
  });

  it('keeps its state when onnxruntime rejects a step', async () => {
    const g = new Graph('embedding');
    const table = g.weight('table', [4, 3], uniform(12, 5));
    const rows = gather(table, g.input('ids', 'int64', [2]));
    const step = compileTrainStep({ graph: g, loss: reduceSum(mul(rows, rows), [0, 1], false), trainable: ['table'] });
    const trainer = await Trainer.create(worker, step, { table: uniform(12, 5) });
    const ids = (...values: number[]): Record<string, TensorData> => ({ ids: { dtype: 'int64', dims: [2], data: BigInt64Array.from(values, BigInt) } });
    await expect(trainer.step(ids(0, 9), 0.1)).rejects.toThrow(TrainerError);
    expect(trainer.steps).toBe(0);
    expect(Array.from(trainer.param('table'))).toEqual(Array.from(uniform(12, 5)));
    await trainer.step(ids(1, 1), 0.1);
    const after = trainer.param('table');
    // Only the looked-up row moves (weight decay touches all rows, but by lr * wd * p, far less).
    const moved = [0, 1, 2, 3].map((row) => Math.abs(after[row * 3] - uniform(12, 5)[row * 3]));
    expect(moved[1]).toBeGreaterThan(0.05);
    expect(Math.max(moved[0], moved[2], moved[3])).toBeLessThan(0.01);
    await trainer.dispose();
  });
});

describe('gradients', () => {
  function mlp() {
    const g = new Graph('mlp');
    const x = g.input('x', 'float32', [16, 4]);
    const y = g.input('y', 'float32', [16, 1]);
    const w1 = g.weight('fc1.weight', [8, 4], uniform(32, 1, 0.5));
    const w2 = g.weight('fc2.weight', [1, 8], uniform(8, 2, 0.35));
    const h = tanh(linear(x, w1, g.weight('fc1.bias', [8], new Float32Array(8))));
    const out = linear(h, w2, g.weight('fc2.bias', [1], new Float32Array(1)));
    const e = sub(out, y);
    return { g, x, w1, w2, loss: reduceMean(mul(e, e), [0, 1], false) };
  }

  const backward = (wrt: (m: ReturnType<typeof mlp>) => Tensor[]) => {
    const m = mlp();
    const before = m.g.nodes.length;
    gradients(m.g, m.loss, wrt(m));
    return { m, added: m.g.nodes.slice(before) };
  };

  it('computes no weight-gradient work for frozen weights', () => {
    const frozen = backward((m) => [m.w2]);
    const full = backward((m) => [m.w1, m.w2]);
    const matmuls = (nodes: typeof frozen.added) => nodes.filter((n) => n.op === 'Gemm').length;
    // Only fc2's weight gradient; with fc1 trainable too, the gradient into h and fc1's weight gradient.
    expect(matmuls(frozen.added)).toBe(1);
    expect(matmuls(full.added)).toBe(3);
    expect(frozen.added.some((n) => n.op === 'Tanh' || n.inputs.some((t) => t === frozen.m.x || t === frozen.m.w1))).toBe(false);
  });

  it('names the operator when a path to the loss has no gradient rule', () => {
    const g = new Graph();
    const w = g.weight('w', [3, 2], new Float32Array(6));
    const scattered = scatterAdd(g.constant('float32', [3, 2], new Float32Array(6)), g.constant('int64', [1, 2], BigInt64Array.of(0n, 2n)), slice(w, [0], [1], [0]), 0);
    expect(() => gradients(g, reduceSum(scattered, [0, 1], false), [w])).toThrow(/ScatterElements \(producing ScatterElements_\d+\) has no gradient rule/);
  });

  it('compiles forward + named gradients for every requested weight', async () => {
    const m = mlp();
    const compiled = compileGradients({ graph: m.g, loss: m.loss, wrt: ['fc1.weight', 'fc2.bias'], wrtAsInputs: false });
    const session = await worker.createSession(compiled.model, { key: compiled.hash });
    expect(session.outputNames).toEqual(['loss', 'grad.fc1.weight', 'grad.fc2.bias']);
    const out = await worker.run(session, {
      x: { dtype: 'float32', dims: [16, 4], data: uniform(64, 3) },
      y: { dtype: 'float32', dims: [16, 1], data: uniform(16, 4) },
    });
    expect(out['grad.fc1.weight'].dims).toEqual([8, 4]);
    expect(Math.abs(Number(out['grad.fc2.bias'].data[0]))).toBeGreaterThan(0);
    await worker.release(session);
  });
});

describe('training on CPU', () => {
  it('fits a small MLP: the loss falls', async () => {
    const g = new Graph('mlp');
    const x = g.input('x', 'float32', [32, 4]);
    const y = g.input('y', 'float32', [32, 1]);
    const init = { 'fc1.weight': uniform(64, 1, 0.5), 'fc1.bias': new Float32Array(16), 'fc2.weight': uniform(16, 2, 0.25), 'fc2.bias': new Float32Array(1) };
    const w = (name: keyof typeof init, shape: number[]) => g.weight(name, shape, init[name]);
    const out = linear(tanh(linear(x, w('fc1.weight', [16, 4]), w('fc1.bias', [16]))), w('fc2.weight', [1, 16]), w('fc2.bias', [1]));
    const e = sub(out, y);
    const step = compileTrainStep({ graph: g, loss: reduceMean(mul(e, e), [0, 1], false), trainable: Object.keys(init), optimizer: { weightDecay: 0 } });
    const trainer = await Trainer.create(worker, step, init);
    const inputs = uniform(128, 7);
    const targets = Float32Array.from({ length: 32 }, (_, i) => Math.sin(inputs[4 * i] + 2 * inputs[4 * i + 1] - inputs[4 * i + 3]));
    const batch: Record<string, TensorData> = { x: { dtype: 'float32', dims: [32, 4], data: inputs }, y: { dtype: 'float32', dims: [32, 1], data: targets } };
    const losses: number[] = [];
    for (let i = 0; i < 100; i++) losses.push((await trainer.step(batch, 0.02)).loss);
    expect(losses.at(-1)!).toBeLessThan(0.1 * losses[0]);
    await trainer.dispose();
  });

  it('fits a small conv-attention net: the loss falls', async () => {
    const net = convAttentionNet();
    const trainable = Object.keys(net.weights);
    const step = compileTrainStep({ graph: net.graph, loss: net.loss, trainable, optimizer: { maxGradNorm: 1 } });
    const trainer = await Trainer.create(worker, step, net.weights);
    const losses: number[] = [];
    for (let i = 0; i < 40; i++) losses.push((await trainer.step(net.batch, 3e-3)).loss);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses.at(-1)!).toBeLessThan(0.3 * losses[0]);
    await trainer.dispose();
  });
});
