import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { gradients } from '../../src/engine/autodiff';
import { attentionGradient, type Graph as EngineGraph, Graph, mul, multiHeadAttention, reduceSum, serialize } from '../../src/engine/graph';
import { scaledDotProductAttention } from '../../src/engine/models/layers';
import { buildClipTextEncoder, parseClipTextConfig } from '../../src/engine/models/clip-text';
import { LoraSlots } from '../../src/engine/models/lora';
import { FLOAT32, type Precision, precisionFor } from '../../src/engine/models/precision';
import { buildUNet, parseUNetConfig } from '../../src/engine/models/unet';
import { buildVaeDecoder, parseVaeConfig } from '../../src/engine/models/vae';
import { Rng } from '../../src/engine/random';
import { readSafetensors, type StoredTensor, toFloat32, toIntegers } from '../../src/engine/weights/safetensors';
import { hasFixtures, loadReference, relativeL2, TINY_SD15 } from '../helpers/fixtures';
import { bindStored, runGraph } from '../helpers/models';

const PACK = join(TINY_SD15, 'pack');
const packConfig = (component: string) => JSON.parse(readFileSync(join(PACK, component, 'config.json'), 'utf8'));
const FUSED_FLOAT32: Precision = { dtype: 'float32', fusedAttention: true };
const FLOAT16: Precision = precisionFor('cuda');

function unetGraph(precision: Precision, sample = [2, 4, 16, 16], slots?: (g: Graph) => LoraSlots): Graph {
  const config = parseUNetConfig(packConfig('unet'));
  const g = new Graph('unet');
  g.output(buildUNet(g, config, g.input('sample', 'float32', sample), g.input('timesteps', 'int64', [sample[0]]),
    g.input('encoder_hidden_states', 'float32', [sample[0], 77, config.crossAttentionDim[0]]), { precision, linear: slots?.(g).linear }), 'out');
  return g;
}

function vaeDecoderGraph(precision: Precision, latents = [1, 4, 16, 16]): Graph {
  const g = new Graph('vae_decoder');
  g.output(buildVaeDecoder(g, parseVaeConfig(packConfig('vae')), g.input('latents', 'float32', latents), { precision }), 'decoded');
  return g;
}

const subset = (stored: ReadonlyMap<string, StoredTensor>, g: EngineGraph) => new Map([...stored].filter(([name]) => g.weights.has(name)));
const f32 = (t: StoredTensor) => new ort.Tensor('float32', toFloat32(t), [...t.shape]);
const opsOf = (g: EngineGraph) => new Set(g.nodes.map((n) => n.op));

describe('precision per device', () => {
  it('is float16 with fused attention on CUDA, float32 and decomposed elsewhere', () => {
    expect(precisionFor('cuda')).toEqual({ dtype: 'float16', fusedAttention: true });
    expect(precisionFor('cpu')).toEqual(FLOAT32);
    expect(precisionFor('webgpu')).toEqual(FLOAT32);
  });
});

describe.skipIf(!hasFixtures)('fused attention (com.microsoft MultiHeadAttention, float32 on the CPU)', () => {
  it('UNet matches diffusers unet.out (rel L2 < 1e-4)', async () => {
    const { tensors } = await loadReference();
    const g = unetGraph(FUSED_FLOAT32, tensors.get('unet.sample')!.shape);
    expect(g.nodes.filter((n) => n.op === 'MultiHeadAttention')).toHaveLength(2 * (2 + 1 + 3)); // self and cross in each transformer: 2 down, 1 mid, 3 up
    expect(opsOf(g).has('Softmax')).toBe(false);
    bindStored(g, await readSafetensors(join(PACK, 'unet', 'diffusion_pytorch_model.safetensors')));
    const t = tensors.get('unet.timesteps')!;
    const out = await runGraph(g, {
      sample: f32(tensors.get('unet.sample')!),
      timesteps: new ort.Tensor('int64', BigInt64Array.from(toIntegers(t), BigInt), [...t.shape]),
      encoder_hidden_states: f32(tensors.get('unet.encoder_hidden_states')!),
    });
    expect(relativeL2(out.out.data as Float32Array, toFloat32(tensors.get('unet.out')!))).toBeLessThan(1e-4);
  });

  it('VAE decoder matches diffusers vae.decoded (rel L2 < 1e-4)', async () => {
    const { tensors } = await loadReference();
    const latents = tensors.get('vae.latents')!;
    const g = vaeDecoderGraph(FUSED_FLOAT32, latents.shape);
    expect(opsOf(g).has('MultiHeadAttention')).toBe(true);
    bindStored(g, subset(await readSafetensors(join(PACK, 'vae', 'diffusion_pytorch_model.safetensors')), g));
    const out = await runGraph(g, { latents: f32(latents) });
    expect(relativeL2(out.decoded.data as Float32Array, toFloat32(tensors.get('vae.decoded')!))).toBeLessThan(1e-4);
  });
});

describe.skipIf(!hasFixtures)('float16 graphs (run on CUDA; their structure is checked here)', () => {
  /** Every node whose inputs include a float16 tensor, by operator. */
  const float16Ops = (g: EngineGraph) => new Set(g.nodes.filter((n) => n.inputs.some((t) => t?.dtype === 'float16')).map((n) => n.op));

  it('UNet: float16 weights but the GroupNorms\' float32 ones, contrib GroupNorm with fused SiLU, fused attention, float32 edges', () => {
    const g = unetGraph(FLOAT16);
    const groupNorms = g.nodes.filter((n) => n.op === 'GroupNorm');
    const float32Weights = [...g.weights.values()].filter((w) => w.tensor.dtype === 'float32').map((w) => w.tensor);
    expect(new Set(float32Weights)).toEqual(new Set(groupNorms.flatMap((n) => n.inputs.slice(1))));
    expect([...g.weights.values()].every((w) => ['float16', 'float32'].includes(w.tensor.dtype))).toBe(true);
    expect(groupNorms.every((n) => n.domain === 'com.microsoft' && n.inputs[0]!.dtype === 'float16')).toBe(true);
    expect(groupNorms.filter((n) => n.attrs.activation.value === 1)).toHaveLength(groupNorms.length - 6); // the 6 transformers' norms have no SiLU
    expect(float16Ops(g)).not.toContain('ReduceMean'); // no statistics in float16
    expect(g.nodes.filter((n) => n.op === 'MultiHeadAttention').every((n) => n.inputs[0]!.dtype === 'float16')).toBe(true);
    expect(g.inputs.map((t) => t.dtype)).toEqual(['float32', 'int64', 'float32']);
    expect(g.outputs[0].dtype).toBe('float32');
  });

  it('serializes the contrib operators under the com.microsoft opset, and onnxruntime accepts the model', async () => {
    const g = unetGraph(FLOAT16);
    for (const weight of g.weights.values()) {
      const size = weight.tensor.shape.reduce((a, b) => a * b, 1);
      weight.data = weight.tensor.dtype === 'float16' ? new Uint16Array(size) : new Float32Array(size);
    }
    const model = onnxProto.onnx.ModelProto.decode(serialize(g));
    expect(model.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([['', 18], ['com.microsoft', 1]]);
    expect(model.graph?.node?.find((n) => n.opType === 'GroupNorm')?.domain).toBe('com.microsoft');
    // The CPU has no GroupNorm kernel: onnxruntime parses and type-checks the model, then refuses that operator alone.
    await expect(ort.InferenceSession.create(serialize(g))).rejects.toThrow(/GroupNorm/);
  });

  it('LoRA slots stay float32 inputs, cast into the float16 model', () => {
    const g = unetGraph(FLOAT16, [2, 4, 16, 16], (graph) => new LoraSlots(graph, 4));
    const slot = g.weights.get('down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight')!;
    expect(slot.tensor.dtype).toBe('float32');
    expect(g.nodes.some((n) => n.op === 'Cast' && n.inputs[0] === slot.tensor)).toBe(true);
  });

  it('VAE decoder and text encoder: softmax and norm statistics never in float16, float32 outputs', () => {
    const vae = vaeDecoderGraph(FLOAT16);
    expect(vae.weights.get('decoder.conv_in.weight')!.tensor.dtype).toBe('float16');
    expect(vae.weights.get('decoder.mid_block.attentions.0.group_norm.weight')!.tensor.dtype).toBe('float32');
    expect(float16Ops(vae)).not.toContain('ReduceMean');
    expect(vae.outputs[0].dtype).toBe('float32');

    const g = new Graph('text_encoder');
    const { lastHiddenState, pooledOutput } = buildClipTextEncoder(g, parseClipTextConfig(packConfig('text_encoder')),
      g.input('input_ids', 'int64', [2, 77]), { precision: FLOAT16 });
    expect(g.weights.get('text_model.embeddings.token_embedding.weight')!.tensor.dtype).toBe('float16');
    expect(float16Ops(g)).not.toContain('Softmax');
    expect(g.nodes.filter((n) => n.op === 'LayerNormalization').every((n) => n.inputs[0]!.dtype === 'float16')).toBe(true);
    expect([lastHiddenState.dtype, pooledOutput.dtype]).toEqual(['float32', 'float32']);
  });
});

describe('MultiHeadAttention gradient (probabilities recomputed in the backward)', () => {
  it('matches the decomposed attention\'s gradients for query, key and value', async () => {
    const shapes = { q: [2, 6, 12], k: [2, 5, 12], v: [2, 5, 12] };
    const rng = new Rng(7);
    const values = Object.fromEntries(Object.entries({ ...shapes, w: [2, 6, 12] }).map(([name, dims]) =>
      [name, new ort.Tensor('float32', rng.normalFloat32(dims.reduce((a, b) => a * b, 1)), dims)]));
    const grads = async (fused: boolean) => {
      const g = new Graph('attention_grad');
      const [q, k, v] = (['q', 'k', 'v'] as const).map((name) => g.input(name, 'float32', shapes[name]));
      const out = scaledDotProductAttention(q, k, v, 3, { fused });
      const loss = reduceSum(mul(out, g.input('w', 'float32', [2, 6, 12])), [0, 1, 2], false);
      gradients(g, loss, [q, k, v]).forEach((grad, i) => g.output(grad, `grad_${'qkv'[i]}`));
      expect(opsOf(g).has('MultiHeadAttention')).toBe(fused);
      return runGraph(g, values);
    };
    const [fused, decomposed] = [await grads(true), await grads(false)];
    for (const name of ['grad_q', 'grad_k', 'grad_v']) {
      expect(relativeL2(fused[name].data as Float32Array, decomposed[name].data as Float32Array)).toBeLessThan(1e-5);
    }
  });

  it('gives the same gradients a block of query rows at a time, the blocks in order', async () => {
    const shapes = { q: [2, 10, 12], k: [2, 7, 12], v: [2, 7, 12] };
    const rng = new Rng(9);
    const values = Object.fromEntries(Object.entries({ ...shapes, w: [2, 10, 12] }).map(([name, dims]) =>
      [name, new ort.Tensor('float32', rng.normalFloat32(dims.reduce((a, b) => a * b, 1)), dims)]));
    const grads = async (mapElements: number) => {
      const g = new Graph('attention_grad_blocks');
      const [q, k, v] = (['q', 'k', 'v'] as const).map((name) => g.input(name, 'float32', shapes[name]));
      const o = multiHeadAttention(q, k, v, 3, 0.4);
      const dy = g.input('w', 'float32', shapes.q);
      attentionGradient([q, k, v, o, dy], 3, Math.fround(0.4), [true, true, true], mapElements)
        .forEach((grad, i) => g.output(grad!, `grad_${'qkv'[i]}`));
      return { out: await runGraph(g, values), softmaxes: g.nodes.filter((n) => n.op === 'Softmax').length };
    };
    // 2 x 3 heads x 7 keys = 42 elements a row: 100 elements fit 2 rows, so 5 blocks of the 10 queries.
    const [whole, blocks] = [await grads(2 ** 20), await grads(100)];
    expect([whole.softmaxes, blocks.softmaxes]).toEqual([1, 5]);
    for (const name of ['grad_q', 'grad_k', 'grad_v']) {
      expect(relativeL2(blocks.out[name].data as Float32Array, whole.out[name].data as Float32Array)).toBeLessThan(1e-6);
    }
  });
});
