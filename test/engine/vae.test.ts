import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Graph } from '../../src/engine/graph';
import { ModelConfigError } from '../../src/engine/models/config';
import { expectedWeights } from '../../src/engine/models/params';
import { buildVaeDecoder, buildVaeEncoder, parseVaeConfig, renameLegacyVaeKeys, type VaeConfig } from '../../src/engine/models/vae';
import { Rng } from '../../src/engine/random';
import { readSafetensors, type StoredTensor, toFloat32 } from '../../src/engine/weights/safetensors';
import { hasFixtures, loadReference, relativeL2, TINY_SD15 } from '../helpers/fixtures';
import { bindStored, halfPrecisionPair, randomizeWeights, runGraph } from '../helpers/models';

const PACK = join(TINY_SD15, 'pack', 'vae');

function encoderGraph(config: VaeConfig, imageShape: number[]): Graph {
  const g = new Graph('vae_encoder');
  const { mean, logvar } = buildVaeEncoder(g, config, g.input('image', 'float32', imageShape));
  g.output(mean, 'mean');
  g.output(logvar, 'logvar');
  return g;
}

function decoderGraph(config: VaeConfig, latentShape: number[]): Graph {
  const g = new Graph('vae_decoder');
  g.output(buildVaeDecoder(g, config, g.input('latents', 'float32', latentShape)), 'decoded');
  return g;
}

/** Keeps the checkpoint tensors a graph declares (encode and decode graphs each use half of the file). */
function subset(stored: ReadonlyMap<string, StoredTensor>, g: Graph): Map<string, StoredTensor> {
  return new Map([...stored].filter(([name]) => g.weights.has(name)));
}

const f32 = (data: Float32Array, dims: readonly number[]) => new ort.Tensor('float32', data, [...dims]);

describe.skipIf(!hasFixtures)('AutoencoderKL on the tiny-sd15 pack', () => {
  const config = () => parseVaeConfig(JSON.parse(readFileSync(join(PACK, 'config.json'), 'utf8')));

  it('encodes to diffusers posterior mean and logvar (rel L2 < 1e-4)', async () => {
    const { tensors } = await loadReference();
    const stored = await readSafetensors(join(PACK, 'diffusion_pytorch_model.safetensors'));
    const image = tensors.get('vae.image')!;
    const g = encoderGraph(config(), image.shape);
    bindStored(g, subset(stored, g));
    const out = await runGraph(g, { image: f32(toFloat32(image), image.shape) });
    expect(out.mean.dims).toEqual(tensors.get('vae.posterior_mean')!.shape);
    expect(relativeL2(out.mean.data as Float32Array, toFloat32(tensors.get('vae.posterior_mean')!))).toBeLessThan(1e-4);
    expect(relativeL2(out.logvar.data as Float32Array, toFloat32(tensors.get('vae.posterior_logvar')!))).toBeLessThan(1e-4);
  });

  it('decodes latents as diffusers does (rel L2 < 1e-4)', async () => {
    const { tensors } = await loadReference();
    const stored = await readSafetensors(join(PACK, 'diffusion_pytorch_model.safetensors'));
    const latents = tensors.get('vae.latents')!;
    const g = decoderGraph(config(), latents.shape);
    bindStored(g, subset(stored, g));
    const out = await runGraph(g, { latents: f32(toFloat32(latents), latents.shape) });
    expect(out.decoded.dims).toEqual(tensors.get('vae.decoded')!.shape);
    expect(relativeL2(out.decoded.data as Float32Array, toFloat32(tensors.get('vae.decoded')!))).toBeLessThan(1e-4);
  });

  it('declares exactly the checkpoint tensors across its encode and decode graphs', async () => {
    const stored = await readSafetensors(join(PACK, 'diffusion_pytorch_model.safetensors'));
    const names = [
      ...expectedWeights(encoderGraph(config(), [1, 3, 32, 32])).keys(),
      ...expectedWeights(decoderGraph(config(), [1, 4, 16, 16])).keys(),
    ];
    expect(names.length).toBe(new Set(names).size);
    expect(new Set(names)).toEqual(new Set(stored.keys()));
  });

  it('reads checkpoints with the legacy attention names (query, key, value, proj_attn)', async () => {
    const stored = await readSafetensors(join(PACK, 'diffusion_pytorch_model.safetensors'));
    const legacyNames: Record<string, string> = { to_q: 'query', to_k: 'key', to_v: 'value', 'to_out.0': 'proj_attn' };
    const legacy = new Map([...stored].map(([name, tensor]) =>
      [name.replace(/attentions\.0\.(to_q|to_k|to_v|to_out\.0)\./, (_, layer: string) => `attentions.0.${legacyNames[layer]}.`), tensor]));
    expect([...legacy.keys()]).toContain('encoder.mid_block.attentions.0.proj_attn.weight');
    expect([...legacy.keys()]).toContain('decoder.mid_block.attentions.0.query.bias');
    const renamed = renameLegacyVaeKeys(legacy);
    expect(new Set(renamed.keys())).toEqual(new Set(stored.keys()));
    for (const [name, tensor] of renamed) expect(tensor).toBe(stored.get(name));
    // Today's names pass through unchanged.
    expect(new Set(renameLegacyVaeKeys(stored).keys())).toEqual(new Set(stored.keys()));
  });

  it('runs an F16 checkpoint exactly as the F32 one with rounded weights', async () => {
    const { tensors } = await loadReference();
    const stored = await readSafetensors(join(PACK, 'diffusion_pytorch_model.safetensors'));
    const latents = tensors.get('vae.latents')!;
    const feeds = { latents: f32(toFloat32(latents), latents.shape) };
    const decode = async (checkpoint: Map<string, StoredTensor>) => {
      const g = decoderGraph(config(), latents.shape);
      bindStored(g, subset(checkpoint, g));
      return (await runGraph(g, feeds)).decoded.data as Float32Array;
    };
    const { half, rounded } = halfPrecisionPair(stored);
    const [fromHalf, fromRounded, exact] = await Promise.all([decode(half), decode(rounded), decode(new Map(stored))]);
    expect(half.get('decoder.conv_in.weight')!.dtype).toBe('F16');
    expect(fromHalf).toEqual(fromRounded);
    // Rounding to half precision must show: the F16 path really used the F16 values.
    expect(relativeL2(fromHalf, exact)).toBeGreaterThan(1e-5);
  });
});

describe('AutoencoderKL on generated configurations', () => {
  // Three resolution levels, two resnets per encoder block, four groups, a skip conv where widths change.
  const threeLevel = parseVaeConfig({
    in_channels: 3, out_channels: 2, latent_channels: 3, norm_num_groups: 4, layers_per_block: 2,
    block_out_channels: [8, 16, 16],
    down_block_types: Array(3).fill('DownEncoderBlock2D'), up_block_types: Array(3).fill('UpDecoderBlock2D'),
  });

  it('follows the config in its shapes and weight names', () => {
    const encoder = encoderGraph(threeLevel, [2, 3, 24, 40]);
    const mean = encoder.outputs[0];
    expect(mean.shape).toEqual([2, 3, 6, 10]);
    const decoder = decoderGraph(threeLevel, [2, 3, 6, 10]);
    expect(decoder.outputs[0].shape).toEqual([2, 2, 24, 40]);
    const names = new Set([...expectedWeights(encoder).keys(), ...expectedWeights(decoder).keys()]);
    expect(names.has('encoder.down_blocks.1.resnets.0.conv_shortcut.weight')).toBe(true); // 8 -> 16
    expect(names.has('encoder.down_blocks.2.resnets.0.conv_shortcut.weight')).toBe(false); // 16 -> 16
    expect(names.has('encoder.down_blocks.1.resnets.1.conv1.weight')).toBe(true);
    expect(names.has('encoder.down_blocks.1.resnets.2.conv1.weight')).toBe(false);
    expect(names.has('encoder.down_blocks.1.downsamplers.0.conv.weight')).toBe(true);
    expect(names.has('encoder.down_blocks.2.downsamplers.0.conv.weight')).toBe(false);
    expect(names.has('decoder.up_blocks.2.resnets.2.conv2.weight')).toBe(true); // layers_per_block + 1
    expect(names.has('decoder.up_blocks.2.resnets.0.conv_shortcut.weight')).toBe(true); // 16 -> 8
    expect(names.has('decoder.up_blocks.1.upsamplers.0.conv.weight')).toBe(true);
    expect(names.has('decoder.up_blocks.2.upsamplers.0.conv.weight')).toBe(false);
    expect(expectedWeights(encoder).get('encoder.conv_out.weight')).toEqual([6, 16, 3, 3]);
    expect(expectedWeights(encoder).get('quant_conv.weight')).toEqual([6, 6, 1, 1]);
    expect(expectedWeights(decoder).get('decoder.conv_out.weight')).toEqual([2, 8, 3, 3]);
    // conv_in; 8 tensors per resnet, 2 per skip conv, 2 per downsampler; mid block 2 resnets + attention
    // (group_norm and four Linear layers); conv_norm_out, conv_out, quant_conv.
    const encoderCount = 2 + (3 * 2 * 8 + 2 + 2 * 2) + (2 * 8 + 10) + 2 + 2 + 2;
    expect(expectedWeights(encoder).size).toBe(encoderCount);

    const noAttention = parseVaeConfig({ ...threeLevel, mid_block_add_attention: false, use_quant_conv: false });
    const plain = expectedWeights(encoderGraph(noAttention, [1, 3, 24, 40]));
    expect([...plain.keys()].some((n) => n.includes('attentions') || n.startsWith('quant_conv'))).toBe(false);
    expect(plain.size).toBe(encoderCount - 10 - 2);
  });

  it('treats each image of a batch independently and clamps logvar', async () => {
    const encoder = encoderGraph(threeLevel, [2, 3, 24, 40]);
    randomizeWeights(encoder, 3);
    const single = encoderGraph(threeLevel, [1, 3, 24, 40]);
    for (const [name, { data }] of encoder.weights) single.weights.get(name)!.data = data;
    const images = new Rng(5).normalFloat32(2 * 3 * 24 * 40);
    const both = await runGraph(encoder, { image: f32(images, [2, 3, 24, 40]) });
    const second = await runGraph(single, { image: f32(images.subarray(3 * 24 * 40), [1, 3, 24, 40]) });
    const half = (both.mean.data as Float32Array).length / 2;
    expect(relativeL2((both.mean.data as Float32Array).subarray(half), second.mean.data as Float32Array)).toBeLessThan(1e-6);
    expect(relativeL2((both.logvar.data as Float32Array).subarray(half), second.logvar.data as Float32Array)).toBeLessThan(1e-6);

    const decoder = decoderGraph(threeLevel, [2, 3, 6, 10]);
    randomizeWeights(decoder, 4);
    const decoded = (await runGraph(decoder, { latents: both.mean })).decoded;
    expect(decoded.dims).toEqual([2, 2, 24, 40]);
    expect((decoded.data as Float32Array).every(Number.isFinite)).toBe(true);

    // logvar is clamped to [-30, 20]: a huge quant_conv bias on the logvar channels (3..5) saturates it.
    const bias = encoder.weights.get('quant_conv.bias')!.data as Float32Array;
    bias.set([1e4, -1e4, 1e4], 3);
    const clamped = await runGraph(encoder, { image: f32(images, [2, 3, 24, 40]) });
    const logvar = clamped.logvar.data as Float32Array;
    const plane = 6 * 10;
    expect(logvar.subarray(0, plane).every((v) => v === 20)).toBe(true);
    expect(logvar.subarray(plane, 2 * plane).every((v) => v === -30)).toBe(true);
    expect(logvar.subarray(2 * plane, 3 * plane).every((v) => v === 20)).toBe(true);
    expect(clamped.mean.data).toEqual(both.mean.data);
  });

  it('rejects unusable configs with a clear error', () => {
    const base = { block_out_channels: [8, 16], down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D'], norm_num_groups: 4 };
    expect(() => parseVaeConfig({ ...base, block_out_channels: [8] })).toThrow(/one entry per resolution level/);
    expect(() => parseVaeConfig({ ...base, norm_num_groups: 3 })).toThrow(/multiple of norm_num_groups/);
    expect(() => parseVaeConfig({ ...base, down_block_types: ['AttnDownEncoderBlock2D', 'DownEncoderBlock2D'] })).toThrow(ModelConfigError);
  });
});
