import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Graph, serialize } from '../../src/engine/graph';
import { ModelConfigError } from '../../src/engine/models/config';
import { expectedWeights } from '../../src/engine/models/params';
import { buildUNet, parseUNetConfig, type UNetConfig } from '../../src/engine/models/unet';
import { Rng } from '../../src/engine/random';
import { readSafetensors, type StoredTensor, toFloat32, toIntegers } from '../../src/engine/weights/safetensors';
import { hasFixtures, loadReference, relativeL2, TINY_SD15 } from '../helpers/fixtures';
import { bindStored, halfPrecisionPair, randomizeWeights, runGraph } from '../helpers/models';

const UNET = join(TINY_SD15, 'pack', 'unet');
const packConfig = () => JSON.parse(readFileSync(join(UNET, 'config.json'), 'utf8'));

/** A UNet graph with inputs sample / timesteps / encoder_hidden_states and output `out`. */
function unetGraph(config: UNetConfig, sample: number[], tokens: number): Graph {
  const g = new Graph('unet');
  const out = buildUNet(g, config, g.input('sample', 'float32', sample), g.input('timesteps', 'int64', [sample[0]]),
    g.input('encoder_hidden_states', 'float32', [sample[0], tokens, config.crossAttentionDim[0]]));
  g.output(out, 'out');
  return g;
}

function feeds(tensors: Map<string, StoredTensor>): Record<string, ort.Tensor> {
  const sample = tensors.get('unet.sample')!;
  const ehs = tensors.get('unet.encoder_hidden_states')!;
  const t = tensors.get('unet.timesteps')!;
  return {
    sample: new ort.Tensor('float32', toFloat32(sample), sample.shape),
    timesteps: new ort.Tensor('int64', BigInt64Array.from(toIntegers(t), BigInt), t.shape),
    encoder_hidden_states: new ort.Tensor('float32', toFloat32(ehs), ehs.shape),
  };
}

describe.skipIf(!hasFixtures)('UNet2DConditionModel on the tiny-sd15 pack', () => {
  it('matches diffusers unet.out (rel L2 < 1e-4)', async () => {
    const { tensors } = await loadReference();
    const g = unetGraph(parseUNetConfig(packConfig()), tensors.get('unet.sample')!.shape, 77);
    bindStored(g, await readSafetensors(join(UNET, 'diffusion_pytorch_model.safetensors')));
    const out = await runGraph(g, feeds(tensors));
    const error = relativeL2(out.out.data as Float32Array, toFloat32(tensors.get('unet.out')!));
    expect(error).toBeLessThan(1e-4);
  });

  it('declares exactly the checkpoint tensors, by name and shape', async () => {
    const stored = await readSafetensors(join(UNET, 'diffusion_pytorch_model.safetensors'));
    const expected = expectedWeights(unetGraph(parseUNetConfig(packConfig()), [2, 4, 16, 16], 77));
    expect(new Map([...stored].map(([name, t]) => [name, t.shape]))).toEqual(expected);
  });

  it('gives the same output with use_linear_projection and the 1x1 conv weights as Linear weights', async () => {
    const { tensors } = await loadReference();
    const stored = await readSafetensors(join(UNET, 'diffusion_pytorch_model.safetensors'));
    // SD 2.x style: proj_in / proj_out are nn.Linear [out, in] instead of nn.Conv2d [out, in, 1, 1]
    const linearWeights = new Map([...stored].map(([name, t]) =>
      [name, /proj_(in|out)\.weight$/.test(name) ? { ...t, shape: t.shape.slice(0, 2) } : t]));
    const g = unetGraph(parseUNetConfig({ ...packConfig(), use_linear_projection: true }), [2, 4, 16, 16], 77);
    expect(expectedWeights(g).get('down_blocks.0.attentions.0.proj_in.weight')).toEqual([32, 32]);
    bindStored(g, linearWeights);
    const out = await runGraph(g, feeds(tensors));
    expect(relativeL2(out.out.data as Float32Array, toFloat32(tensors.get('unet.out')!))).toBeLessThan(1e-4);
  });

  it('runs an F16 checkpoint exactly as the F32 one with rounded weights', async () => {
    const { tensors } = await loadReference();
    const stored = await readSafetensors(join(UNET, 'diffusion_pytorch_model.safetensors'));
    const run = async (checkpoint: Map<string, StoredTensor>) => {
      const g = unetGraph(parseUNetConfig(packConfig()), [2, 4, 16, 16], 77);
      bindStored(g, checkpoint);
      return (await runGraph(g, feeds(tensors))).out.data as Float32Array;
    };
    const { half, rounded } = halfPrecisionPair(stored);
    const [fromHalf, fromRounded, exact] = [await run(half), await run(rounded), await run(new Map(stored))];
    expect(half.get('conv_in.weight')!.dtype).toBe('F16');
    expect(fromHalf).toEqual(fromRounded);
    // rounding to half precision shows: the F16 path really used the F16 values
    expect(relativeL2(fromHalf, exact)).toBeGreaterThan(1e-5);
  });
});

describe('UNet2DConditionModel on generated configurations', () => {
  // Three resolution levels, per-block head counts, SD 2.x linear projections, two transformer layers in the middle level.
  const threeLevel = {
    in_channels: 4, out_channels: 3, block_out_channels: [32, 64, 64], layers_per_block: 1, norm_num_groups: 8,
    down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
    cross_attention_dim: 24, attention_head_dim: [2, 4, 8], transformer_layers_per_block: [1, 2, 1], use_linear_projection: true,
  };

  it('follows the config in its weight names and shapes', () => {
    const weights = expectedWeights(unetGraph(parseUNetConfig(threeLevel), [1, 4, 16, 16], 7));
    expect(weights.get('down_blocks.0.downsamplers.0.conv.weight')).toEqual([32, 32, 3, 3]);
    expect(weights.get('down_blocks.1.downsamplers.0.conv.weight')).toEqual([64, 64, 3, 3]);
    expect(weights.has('down_blocks.2.downsamplers.0.conv.weight')).toBe(false);
    expect(weights.get('down_blocks.1.resnets.0.conv_shortcut.weight')).toEqual([64, 32, 1, 1]);
    expect(weights.get('down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight')).toEqual([64, 24]);
    expect(weights.has('down_blocks.1.attentions.0.transformer_blocks.2.attn1.to_q.weight')).toBe(false);
    expect(weights.get('mid_block.attentions.0.proj_in.weight')).toEqual([64, 64]);
    expect(weights.get('up_blocks.1.attentions.1.transformer_blocks.1.ff.net.0.proj.weight')).toEqual([512, 64]);
    expect(weights.get('up_blocks.2.resnets.0.conv1.weight')).toEqual([32, 96, 3, 3]); // 64 from below + 32 skip
    expect(weights.get('up_blocks.2.resnets.1.conv1.weight')).toEqual([32, 64, 3, 3]); // 32 + 32 skip
    expect(weights.has('up_blocks.1.upsamplers.0.conv.weight')).toBe(true);
    expect(weights.has('up_blocks.2.upsamplers.0.conv.weight')).toBe(false);
    expect(weights.get('conv_out.weight')).toEqual([3, 32, 3, 3]);
    // 10 tensors per resnet (+2 with a shortcut conv), 6 per transformer + 20 per transformer block,
    // 2 per resampler; time embedding 4, conv_in 2, conv_norm_out 2, conv_out 2.
    const down = (10 + 6 + 20 + 2) + (12 + 6 + 40 + 2) + 10;
    const mid = 2 * 10 + 6 + 20;
    const up = (12 + 12 + 2) + (12 + 46 + 12 + 46 + 2) + (12 + 26 + 12 + 26);
    expect(weights.size).toBe(down + mid + up + 10);
  });

  it('reads heads from attention_head_dim (legacy) or num_attention_heads into the same graph', () => {
    const bytes = (config: object) => {
      const g = unetGraph(parseUNetConfig(config), [1, 4, 16, 16], 7);
      // the graph's structure is the point here, so any weight values do
      for (const entry of g.weights.values()) entry.data = new Float32Array(entry.tensor.shape.reduce((a, b) => a * b, 1));
      return Buffer.from(serialize(g));
    };
    const legacy = bytes(threeLevel);
    expect(bytes({ ...threeLevel, attention_head_dim: 5, num_attention_heads: [2, 4, 8] }).equals(legacy)).toBe(true);
    expect(bytes({ ...threeLevel, attention_head_dim: [8, 4, 2] }).equals(legacy)).toBe(false);
    const single = { ...threeLevel, attention_head_dim: 4 };
    expect(bytes(single).equals(bytes({ ...threeLevel, attention_head_dim: [4, 4, 4] }))).toBe(true);
    expect(bytes(single).equals(bytes({ ...threeLevel, num_attention_heads: 4 }))).toBe(true);
  });

  it('runs, treats each batch row on its own, and depends on the head split', async () => {
    const run = async (config: object, batch: number, seedOffset: number) => {
      const g = unetGraph(parseUNetConfig(config), [batch, 4, 16, 16], 7);
      randomizeWeights(g, 7);
      const rng = new Rng(100 + seedOffset);
      const sample = rng.normalFloat32(batch * 4 * 16 * 16);
      const context = rng.normalFloat32(batch * 7 * 24);
      return { sample, context, run: (s: Float32Array, c: Float32Array, t: number[]) => runGraph(g, {
        sample: new ort.Tensor('float32', s, [t.length, 4, 16, 16]),
        timesteps: new ort.Tensor('int64', BigInt64Array.from(t, BigInt), [t.length]),
        encoder_hidden_states: new ort.Tensor('float32', c, [t.length, 7, 24]),
      }).then((o) => o.out) };
    };
    const pair = await run(threeLevel, 2, 0);
    const both = await pair.run(pair.sample, pair.context, [10, 900]);
    expect(both.dims).toEqual([2, 3, 16, 16]);
    const out = both.data as Float32Array;
    expect(out.every(Number.isFinite)).toBe(true);
    const single = await run(threeLevel, 1, 0);
    const rows = [0, 1].map((b) => single.run(pair.sample.subarray(b * 1024, (b + 1) * 1024), pair.context.subarray(b * 168, (b + 1) * 168), [[10, 900][b]]));
    for (const [b, row] of (await Promise.all(rows)).entries()) {
      expect(relativeL2(row.data as Float32Array, out.subarray(b * 768, (b + 1) * 768))).toBeLessThan(1e-5);
    }
    const swapped = await run({ ...threeLevel, attention_head_dim: [8, 4, 2] }, 2, 0);
    const other = (await swapped.run(pair.sample, pair.context, [10, 900])).data as Float32Array;
    expect(relativeL2(other, out)).toBeGreaterThan(1e-4);
  });

  it('refuses configs it cannot build, naming the key', () => {
    expect(() => parseUNetConfig({ ...threeLevel, resnet_time_scale_shift: 'scale_shift' })).toThrow(/resnet_time_scale_shift/);
    expect(() => parseUNetConfig({ ...threeLevel, attention_head_dim: [2, 4] })).toThrow(/2 entries for 3 down blocks/);
    expect(() => parseUNetConfig({ ...threeLevel, down_block_types: ['CrossAttnDownBlock3D'] })).toThrow(ModelConfigError);
    expect(() => parseUNetConfig({ ...threeLevel, class_embed_type: 'timestep' })).toThrow(/class_embed_type/);
    expect(() => unetGraph(parseUNetConfig(threeLevel), [1, 4, 18, 16], 7)).toThrow(/18x16 is not a multiple of 4/);
  });
});
