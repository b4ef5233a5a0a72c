import { afterAll, describe, expect, it } from 'vitest';
import { compileGradients, estimateTrainingMemory, gradients, needsRecomputation } from '../../src/engine/autodiff';
import { type Node, type Tensor } from '../../src/engine/graph';
import { parseUNetConfig } from '../../src/engine/models/unet';
import { BUNDLED_TINY_SD, clipTokenizerFiles, declaredPackWeights, initialWeights } from '../../src/engine/packs';
import { buildDreamBoothLoss, type StepShape, type TrainingMethod } from '../../src/engine/pipelines/dreambooth-graph';
import { Rng } from '../../src/engine/random';
import { float16ArrayToFloat32, float32ArrayToFloat16 } from '../../src/engine/weights/dtype';
import { EngineWorker, type TensorData } from '../../src/engine/runtime';
import { ClipTokenizer } from '../../src/engine/tokenizer';
import { relativeL2 } from '../helpers/relative-l2';

/** Activation recomputation (gradient checkpointing) on a small SD-shaped UNet: the same gradients, fewer kept values. */

const models = {
  unet: {
    config: parseUNetConfig(BUNDLED_TINY_SD.unet),
    sampleSize: 8,
    weights: initialWeights(declaredPackWeights(BUNDLED_TINY_SD).unet, new Rng(7)),
  },
  tokenizer: ClipTokenizer.fromFiles(clipTokenizerFiles()),
  scheduler: { config: BUNDLED_TINY_SD.scheduler, name: 'pndm' as const },
};

const shape = (method: TrainingMethod, fusedAttention = false, frozenFloat16 = false): StepShape =>
  ({ method, batchSize: 1, prior: true, latentSize: 8, optimizer: {}, recompute: false, fusedAttention, frozenFloat16 });

// Unoptimized, so both graphs run the same kernels: onnxruntime fuses differently around the recomputed segments'
// inputs, which moves the worst gradient by 5.6e-6 relative at the default level.
const worker = new EngineWorker({ graphOptimizationLevel: 'disabled' });
afterAll(() => worker.close());

function feeds(names: readonly string[], trainable: Map<string, Float32Array>): Record<string, TensorData> {
  const rng = new Rng(3);
  const latent = 2 * 4 * 8 * 8;
  const all: Record<string, TensorData> = {
    noisy_latents: { dtype: 'float32', dims: [2, 4, 8, 8], data: rng.normalFloat32(latent) },
    target: { dtype: 'float32', dims: [2, 4, 8, 8], data: rng.normalFloat32(latent) },
    timesteps: { dtype: 'int64', dims: [2], data: BigInt64Array.of(10n, 700n) },
    encoder_hidden_states: { dtype: 'float32', dims: [2, 77, 32], data: rng.normalFloat32(2 * 77 * 32) },
    prior_loss_weight: { dtype: 'float32', dims: [], data: Float32Array.of(0.7) },
    lora_scale: { dtype: 'float32', dims: [], data: Float32Array.of(1) },
  };
  for (const [name, data] of trainable) all[name] = { dtype: 'float32', dims: [data.length], data: data.slice() };
  return Object.fromEntries(names.map((name) => [name, all[name]]));
}

/** Loss and every gradient of the DreamBooth loss of `step`, with or without recomputation. */
async function lossAndGradients(step: StepShape, recompute: boolean, values: Map<string, Float32Array>, on = models) {
  const { graph, loss, trainable } = buildDreamBoothLoss(on, step);
  const compiled = compileGradients({ graph, loss, wrt: trainable, recompute });
  const session = await worker.createSession(compiled.model, { key: compiled.hash });
  const inputs = feeds(session.inputNames, values);
  for (const { name, shape: dims } of compiled.params) inputs[name] = { ...inputs[name], dims } as TensorData;
  const out = await worker.run(session, inputs);
  await worker.release(session);
  return { out, trainable, nodes: graph.nodes.length };
}

describe('activation recomputation', () => {
  // LoRA through the fused attention (its gradient recomputes too), the full fine-tune through the decomposed one.
  for (const [method, fused] of [[{ kind: 'lora', rank: 2 }, true], [{ kind: 'full' }, false]] as [TrainingMethod, boolean][]) {
    it(`gives the kept activations' gradients on a small UNet (${method.kind}, ${fused ? 'fused' : 'decomposed'} attention)`, async () => {
      const probe = buildDreamBoothLoss(models, shape(method));
      const rng = new Rng(11);
      // Nonzero LoRA matrices, so gradients flow into both A and B.
      const values = new Map(probe.trainable.map((name) => [name, models.unet.weights.get(name) ?? rng.normalFloat32(
        probe.graph.weights.get(name)!.tensor.shape.reduce((a, b) => a * b, 1)).map((x) => x * 0.1)]));
      const kept = await lossAndGradients(shape(method, fused), false, values);
      const recomputed = await lossAndGradients(shape(method, fused), true, values);
      expect(recomputed.nodes).toBeGreaterThan(kept.nodes);
      expect(Number(recomputed.out.loss.data[0])).toBe(Number(kept.out.loss.data[0]));
      let worst = 0;
      for (const name of kept.trainable) {
        const a = kept.out[`grad.${name}`].data as Float32Array;
        const b = recomputed.out[`grad.${name}`].data as Float32Array;
        if (a.some((x) => x !== 0)) worst = Math.max(worst, relativeL2(b, a));
        else expect(b.every((x) => x === 0)).toBe(true);
      }
      expect(worst).toBeLessThan(1e-6);
    }, 120_000);
  }

  it('stores the frozen UNet in float16: the gradients of its rounded weights in float32', async () => {
    const method: TrainingMethod = { kind: 'lora', rank: 2 };
    const half = buildDreamBoothLoss(models, shape(method, true, true));
    const stored = [...half.graph.weights.values()].filter(({ data }) => data);
    expect(stored.length).toBeGreaterThan(100);
    // All but the GroupNorms' scales and shifts, which groupNorm takes in float32.
    const float32 = stored.filter(({ tensor }) => tensor.dtype === 'float32').map(({ tensor }) => tensor.name);
    expect(float32.length).toBeGreaterThan(0);
    expect(float32.every((name) => /norm\.|norm[12]\.|norm_out\./.test(name))).toBe(true);
    expect(stored.filter(({ tensor }) => tensor.dtype === 'float16').length).toBeGreaterThan(float32.length);
    const rounded = { ...models, unet: { ...models.unet, weights: new Map([...models.unet.weights].map(([name, data]) =>
      [name, float16ArrayToFloat32(float32ArrayToFloat16(data))])) } };
    const rng = new Rng(5);
    const values = new Map(half.trainable.map((name) => [name, rng.normalFloat32(
      half.graph.weights.get(name)!.tensor.shape.reduce((a, b) => a * b, 1)).map((x) => x * 0.1)]));
    const reference = await lossAndGradients(shape(method, true), false, values, rounded);
    const float16 = await lossAndGradients(shape(method, true, true), true, values);
    expect(relativeL2(float16.out.loss.data as Float32Array, reference.out.loss.data as Float32Array)).toBeLessThan(1e-6);
    for (const name of reference.trainable) {
      expect(relativeL2(float16.out[`grad.${name}`].data as Float32Array, reference.out[`grad.${name}`].data as Float32Array)).toBeLessThan(1e-5);
    }
  }, 120_000);

  it('keeps no value from inside a segment for the backward pass', () => {
    const { graph, loss, trainable } = buildDreamBoothLoss(models, shape({ kind: 'lora', rank: 2 }));
    expect(graph.segments.length).toBeGreaterThan(10);
    const inside = new Set<Tensor>();
    const producedBy = new Map<Tensor, readonly Node[]>();
    for (const segment of graph.segments) for (const node of segment) for (const output of node.outputs) producedBy.set(output, segment);
    // Values used only within their own segment: neither a segment's result nor a graph output.
    const usedOutside = new Set<Tensor>(graph.outputs);
    for (const node of graph.nodes) {
      for (const input of node.inputs) if (input && producedBy.has(input) && !producedBy.get(input)!.includes(node)) usedOutside.add(input);
    }
    for (const tensor of producedBy.keys()) if (!usedOutside.has(tensor)) inside.add(tensor);
    const before = graph.nodes.length;
    gradients(graph, loss, trainable.map((name) => graph.weights.get(name)!.tensor), { recompute: true });
    const backward = graph.nodes.slice(before);
    expect(backward.filter((node) => node.inputs.some((input) => input && inside.has(input)))).toEqual([]);
    // Without recomputation the backward pass reads them (the check above can fail).
    const again = buildDreamBoothLoss(models, shape({ kind: 'lora', rank: 2 }));
    const start = again.graph.nodes.length;
    const insideAgain = new Set(again.graph.segments.flat().flatMap((node) => node.outputs));
    gradients(again.graph, again.loss, again.trainable.map((name) => again.graph.weights.get(name)!.tensor));
    expect(again.graph.nodes.slice(start).some((node) => node.inputs.some((input) => input && insideAgain.has(input)))).toBe(true);
  });

  it('is needed by the estimate for an SD-sized step, not for the small one', () => {
    const small = buildDreamBoothLoss(models, shape({ kind: 'lora', rank: 4 }));
    const estimate = estimateTrainingMemory(small.graph);
    expect(estimate.weightBytes).toBeGreaterThan(0);
    expect(needsRecomputation(small.graph, 2 ** 30)).toBe(false);
    expect(needsRecomputation(small.graph, estimate.weightBytes + estimate.activationBytes - 1)).toBe(true);
  });
});
