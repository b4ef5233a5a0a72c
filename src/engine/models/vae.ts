import { z } from 'zod';
import { add, cast, chunk, clamp, conv, type Graph, reshape, type Tensor, transpose, upsampleNearest } from '../graph';
import { parseModelConfig } from './config';
import { conv2dLayer, groupNormLayer, linearLayer, scaledDotProductAttention } from './layers';
import { Params } from './params';
import { FLOAT32, type Precision } from './precision';

/** The fields of diffusers' AutoencoderKL config (`vae/config.json`) that shape the graph. */
const VAE_CONFIG = z.object({
  in_channels: z.number().int().positive().default(3),
  out_channels: z.number().int().positive().default(3),
  down_block_types: z.array(z.literal('DownEncoderBlock2D')).min(1),
  up_block_types: z.array(z.literal('UpDecoderBlock2D')).min(1),
  block_out_channels: z.array(z.number().int().positive()).min(1),
  layers_per_block: z.number().int().positive().default(1),
  act_fn: z.literal('silu').default('silu'),
  latent_channels: z.number().int().positive().default(4),
  norm_num_groups: z.number().int().positive().default(32),
  scaling_factor: z.number().positive().default(0.18215),
  use_quant_conv: z.boolean().default(true),
  use_post_quant_conv: z.boolean().default(true),
  mid_block_add_attention: z.boolean().default(true),
}).refine((c) => c.down_block_types.length === c.block_out_channels.length && c.up_block_types.length === c.block_out_channels.length, {
  message: 'down_block_types, up_block_types and block_out_channels must have one entry per resolution level',
}).refine((c) => c.block_out_channels.every((channels) => channels % c.norm_num_groups === 0), {
  message: 'every block_out_channels entry must be a multiple of norm_num_groups',
});

export type VaeConfig = z.output<typeof VAE_CONFIG>;

export function parseVaeConfig(json: unknown): VaeConfig {
  return parseModelConfig(VAE_CONFIG, json, 'vae/config.json');
}

/** diffusers before 0.14 named the mid-block attention's Linear layers as below; it still loads such files. */
const LEGACY_ATTENTION_NAMES: Record<string, string> = { query: 'to_q', key: 'to_k', value: 'to_v', proj_attn: 'to_out.0' };

/** Checkpoint keys renamed from the legacy attention names to today's (`attentions.0.query.weight` -> `attentions.0.to_q.weight`). */
export function renameLegacyVaeKeys<T>(stored: ReadonlyMap<string, T>): Map<string, T> {
  return new Map([...stored].map(([key, tensor]) => [
    key.replace(/(\.attentions\.\d+\.)(query|key|value|proj_attn)\./, (_, path: string, name: string) => `${path}${LEGACY_ATTENTION_NAMES[name]}.`),
    tensor,
  ]));
}

/** diffusers builds every VAE norm with this epsilon (`resnet_eps`), whatever the config. */
const EPS = 1e-6;

/** ResnetBlock2D without a time embedding: two norm-SiLU-conv stages, a 1x1 conv on the skip when widths differ. */
function resnet(p: Params, x: Tensor, inChannels: number, outChannels: number, groups: number): Tensor {
  let h = groupNormLayer(p.child('norm1'), x, groups, inChannels, EPS, { silu: true });
  h = conv2dLayer(p.child('conv1'), h, inChannels, outChannels, 3, { padding: 1 });
  h = groupNormLayer(p.child('norm2'), h, groups, outChannels, EPS, { silu: true });
  h = conv2dLayer(p.child('conv2'), h, outChannels, outChannels, 3, { padding: 1 });
  const skip = inChannels === outChannels ? x : conv2dLayer(p.child('conv_shortcut'), x, inChannels, outChannels, 1);
  return add(skip, h);
}

/**
 * The mid block's Attention: one head as wide as the channels, over the H*W pixels as tokens, with
 * to_q/to_k/to_v/to_out.0 Linear layers and a residual connection.
 */
function attention(p: Params, x: Tensor, channels: number, groups: number, fused: boolean): Tensor {
  const [batch, , height, width] = x.shape;
  const normed = groupNormLayer(p.child('group_norm'), x, groups, channels, EPS);
  const tokens = transpose(reshape(normed, [batch, channels, height * width]), [0, 2, 1]);
  const q = linearLayer(p.child('to_q'), tokens, channels, channels);
  const k = linearLayer(p.child('to_k'), tokens, channels, channels);
  const v = linearLayer(p.child('to_v'), tokens, channels, channels);
  const out = linearLayer(p.child('to_out').child(0), scaledDotProductAttention(q, k, v, 1, { fused }), channels, channels);
  return add(x, reshape(transpose(out, [0, 2, 1]), x.shape));
}

/** UNetMidBlock2D without time embedding: resnet, (attention), resnet at the lowest resolution. */
function midBlock(p: Params, x: Tensor, channels: number, config: VaeConfig, fusedAttention = false): Tensor {
  const groups = config.norm_num_groups;
  let h = resnet(p.child('resnets.0'), x, channels, channels, groups);
  if (config.mid_block_add_attention) h = attention(p.child('attentions.0'), h, channels, groups, fusedAttention);
  return resnet(p.child('resnets.1'), h, channels, channels, groups);
}

/** Downsample2D with padding=0: pad one row and column at the bottom and right, then a stride-2 3x3 conv. */
function downsample(p: Params, x: Tensor, channels: number): Tensor {
  return conv(x, p.weight('conv.weight', [channels, channels, 3, 3]), p.weight('conv.bias', [channels]), {
    strides: [2, 2],
    pads: [0, 0, 1, 1],
  });
}

/** Upsample2D: nearest-neighbour x2, then a 3x3 conv. */
function upsample(p: Params, x: Tensor, channels: number): Tensor {
  return conv2dLayer(p.child('conv'), upsampleNearest(x, [1, 1, 2, 2]), channels, channels, 3, { padding: 1 });
}

export interface VaePosterior {
  /** [batch, latent_channels, H / 2^(levels-1), W / 2^(levels-1)] */
  mean: Tensor;
  /** Same shape; clamped to [-30, 20] as DiagonalGaussianDistribution does. */
  logvar: Tensor;
}

/** AutoencoderKL.encode on images [batch, in_channels, H, W] in [-1, 1]: the diagonal Gaussian posterior. */
export function buildVaeEncoder(g: Graph, config: VaeConfig, image: Tensor): VaePosterior {
  const p = new Params(g, 'encoder');
  const channels = config.block_out_channels;
  const groups = config.norm_num_groups;
  let h = conv2dLayer(p.child('conv_in'), image, config.in_channels, channels[0], 3, { padding: 1 });
  let inChannels = channels[0];
  channels.forEach((outChannels, i) => {
    const block = p.child('down_blocks').child(i);
    for (let j = 0; j < config.layers_per_block; j++) {
      h = resnet(block.child('resnets').child(j), h, j === 0 ? inChannels : outChannels, outChannels, groups);
    }
    if (i < channels.length - 1) h = downsample(block.child('downsamplers.0'), h, outChannels);
    inChannels = outChannels;
  });
  const deepest = channels[channels.length - 1];
  h = midBlock(p.child('mid_block'), h, deepest, config);
  h = groupNormLayer(p.child('conv_norm_out'), h, groups, deepest, EPS, { silu: true });
  const moments = 2 * config.latent_channels;
  h = conv2dLayer(p.child('conv_out'), h, deepest, moments, 3, { padding: 1 });
  if (config.use_quant_conv) h = conv2dLayer(new Params(g, 'quant_conv'), h, moments, moments, 1);
  const [mean, logvar] = chunk(h, 2, 1);
  return { mean, logvar: clamp(logvar, -30, 20) };
}

/**
 * AutoencoderKL.decode on latents [batch, latent_channels, h, w] already divided by `scaling_factor`:
 * images [batch, out_channels, h * 2^(levels-1), w * 2^(levels-1)], nominally in [-1, 1]; float32 in and out
 * whatever `precision` computes in.
 */
export function buildVaeDecoder(g: Graph, config: VaeConfig, latents: Tensor, { precision = FLOAT32 }: { precision?: Precision } = {}): Tensor {
  const latentChannels = config.latent_channels;
  const { dtype, fusedAttention } = precision;
  let h = cast(latents, dtype);
  if (config.use_post_quant_conv) h = conv2dLayer(new Params(g, 'post_quant_conv', dtype), h, latentChannels, latentChannels, 1);
  const p = new Params(g, 'decoder', dtype);
  const reversed = [...config.block_out_channels].reverse();
  const groups = config.norm_num_groups;
  h = conv2dLayer(p.child('conv_in'), h, latentChannels, reversed[0], 3, { padding: 1 });
  h = midBlock(p.child('mid_block'), h, reversed[0], config, fusedAttention);
  let inChannels = reversed[0];
  reversed.forEach((outChannels, i) => {
    const block = p.child('up_blocks').child(i);
    // Decoder blocks carry one resnet more than encoder blocks.
    for (let j = 0; j <= config.layers_per_block; j++) {
      h = resnet(block.child('resnets').child(j), h, j === 0 ? inChannels : outChannels, outChannels, groups);
    }
    if (i < reversed.length - 1) h = upsample(block.child('upsamplers.0'), h, outChannels);
    inChannels = outChannels;
  });
  const shallowest = reversed[reversed.length - 1];
  h = groupNormLayer(p.child('conv_norm_out'), h, groups, shallowest, EPS, { silu: true });
  return cast(conv2dLayer(p.child('conv_out'), h, shallowest, config.out_channels, 3, { padding: 1 }), 'float32');
}
