import { z } from 'zod';
import {
  add, cast, chunk, concat, conv, cos, div, expand, gelu, type Graph, GraphError, mul, reshape, silu, sin, type Tensor,
  transpose, upsampleNearest,
} from '../graph';
import { ModelConfigError, parseModelConfig } from './config';
import { conv2dLayer, groupNormLayer, layerNormLayer, linearLayer, scaledDotProductAttention } from './layers';
import { Params } from './params';
import { FLOAT32, type Precision } from './precision';

/**
 * diffusers' UNet2DConditionModel as Stable Diffusion 1.x and 2.x use it, built from `unet/config.json`.
 * Parameter names are the checkpoint keys (`down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight`).
 */

const intOrList = z.union([z.number().int().positive(), z.array(z.number().int().positive()).nonempty()]);

/** The config keys this model reads, with diffusers' defaults; options that change the architecture
 *  into something other than SD 1.x/2.x are accepted only at their inactive values. */
const configSchema = z.object({
  in_channels: z.number().int().positive().default(4),
  out_channels: z.number().int().positive().default(4),
  center_input_sample: z.boolean().default(false),
  flip_sin_to_cos: z.boolean().default(true),
  freq_shift: z.number().default(0),
  down_block_types: z.array(z.enum(['CrossAttnDownBlock2D', 'DownBlock2D'])).nonempty(),
  mid_block_type: z.enum(['UNetMidBlock2DCrossAttn']).nullable().default('UNetMidBlock2DCrossAttn'),
  up_block_types: z.array(z.enum(['CrossAttnUpBlock2D', 'UpBlock2D'])).nonempty(),
  only_cross_attention: z.union([z.literal(false), z.array(z.literal(false))]).default(false),
  block_out_channels: z.array(z.number().int().positive()).nonempty(),
  layers_per_block: intOrList.default(2),
  downsample_padding: z.number().int().nonnegative().default(1),
  mid_block_scale_factor: z.number().positive().default(1),
  act_fn: z.enum(['silu', 'swish']).default('silu'),
  norm_num_groups: z.number().int().positive().default(32),
  norm_eps: z.number().positive().default(1e-5),
  cross_attention_dim: intOrList.default(1280),
  transformer_layers_per_block: intOrList.default(1),
  reverse_transformer_layers_per_block: z.array(z.number().int().positive()).nullable().default(null),
  attention_head_dim: intOrList.default(8),
  num_attention_heads: intOrList.nullable().default(null),
  use_linear_projection: z.boolean().default(false),
  upcast_attention: z.boolean().default(false),
  time_embedding_dim: z.number().int().positive().nullable().default(null),
  conv_in_kernel: z.number().int().positive().default(3),
  conv_out_kernel: z.number().int().positive().default(3),
  dual_cross_attention: z.literal(false).default(false),
  resnet_time_scale_shift: z.literal('default').default('default'),
  resnet_skip_time_act: z.literal(false).default(false),
  resnet_out_scale_factor: z.literal(1).default(1),
  time_embedding_type: z.literal('positional').default('positional'),
  time_embedding_act_fn: z.null().default(null),
  timestep_post_act: z.null().default(null),
  time_cond_proj_dim: z.null().default(null),
  class_embed_type: z.null().default(null),
  num_class_embeds: z.null().default(null),
  addition_embed_type: z.null().default(null),
  encoder_hid_dim: z.null().default(null),
  encoder_hid_dim_type: z.null().default(null),
  attention_type: z.literal('default').default('default'),
  cross_attention_norm: z.null().default(null),
  dropout: z.number().min(0).max(1).default(0),
});

type RawConfig = z.infer<typeof configSchema>;

/** A validated config with every per-block option spelled out per down block, as diffusers' __init__ does. */
export interface UNetConfig {
  raw: RawConfig;
  blockOutChannels: number[];
  layersPerBlock: number[];
  /** Heads per down block (the legacy `attention_head_dim` when `num_attention_heads` is unset). */
  numAttentionHeads: number[];
  crossAttentionDim: number[];
  transformerLayersPerBlock: number[];
  reverseTransformerLayersPerBlock: number[];
  timeEmbedDim: number;
}

function perBlock(value: number | number[], blocks: number, key: string): number[] {
  const list = Array.isArray(value) ? value : Array(blocks).fill(value);
  if (list.length !== blocks) throw new ModelConfigError(`${key} has ${list.length} entries for ${blocks} down blocks`);
  return list;
}

/** Validates `unet/config.json`; errors name the offending key. */
export function parseUNetConfig(json: unknown): UNetConfig {
  const raw = parseModelConfig(configSchema, json, 'unet/config.json');
  const blocks = raw.down_block_types.length;
  if (raw.up_block_types.length !== blocks) {
    throw new ModelConfigError(`up_block_types has ${raw.up_block_types.length} entries, down_block_types ${blocks}`);
  }
  if (raw.block_out_channels.length !== blocks) {
    throw new ModelConfigError(`block_out_channels has ${raw.block_out_channels.length} entries for ${blocks} down blocks`);
  }
  for (const channels of raw.block_out_channels) {
    if (channels % raw.norm_num_groups) throw new ModelConfigError(`block_out_channels ${channels} is not divisible by norm_num_groups ${raw.norm_num_groups}`);
  }
  // diffusers' historical naming: SD 1.x configs put the number of heads in attention_head_dim.
  const numAttentionHeads = perBlock(raw.num_attention_heads ?? raw.attention_head_dim, blocks, 'num_attention_heads/attention_head_dim');
  raw.block_out_channels.forEach((channels, i) => {
    if (channels % numAttentionHeads[i]) throw new ModelConfigError(`block ${i}: ${channels} channels do not split into ${numAttentionHeads[i]} heads`);
  });
  const transformerLayersPerBlock = perBlock(raw.transformer_layers_per_block, blocks, 'transformer_layers_per_block');
  return {
    raw,
    blockOutChannels: raw.block_out_channels,
    layersPerBlock: perBlock(raw.layers_per_block, blocks, 'layers_per_block'),
    numAttentionHeads,
    crossAttentionDim: perBlock(raw.cross_attention_dim, blocks, 'cross_attention_dim'),
    transformerLayersPerBlock,
    reverseTransformerLayersPerBlock: raw.reverse_transformer_layers_per_block ?? [...transformerLayersPerBlock].reverse(),
    timeEmbedDim: raw.time_embedding_dim ?? raw.block_out_channels[0] * 4,
  };
}

/**
 * Builds a torch.nn.Linear named by `p`. The UNet calls it for every projection inside its transformers
 * (attention to_q/to_k/to_v/to_out.0, feed-forward, linear proj_in/proj_out), so LoRA can wrap them.
 */
export type LinearBuilder = (p: Params, x: Tensor, inFeatures: number, outFeatures: number, bias: boolean) => Tensor;

export interface UNetOptions {
  linear?: LinearBuilder;
  /** FLOAT32 (standard operators only, float64-capable) unless given. */
  precision?: Precision;
}

/** What every block needs besides its own channels. */
interface Context {
  temb: Tensor;
  encoderHiddenStates: Tensor;
  groups: number;
  eps: number;
  useLinearProjection: boolean;
  linear: LinearBuilder;
  fusedAttention: boolean;
}

/**
 * diffusers' get_timestep_embedding. torch builds the frequencies in float32 even in a float64 model, so we round
 * each step the way it does: exponent = -ln(max_period) * i / (half - shift), freq = exp(exponent).
 */
function timestepFrequencies(half: number, shift: number): Float32Array {
  const f = Math.fround;
  const logPeriod = f(-Math.log(10000));
  return Float32Array.from({ length: half }, (_, i) => f(Math.exp(f(f(logPeriod * i) / f(half - shift)))));
}

function timeProj(g: Graph, timesteps: Tensor, batch: number, channels: number, flipSinToCos: boolean, freqShift: number): Tensor {
  if (channels % 2) throw new ModelConfigError(`time_proj needs an even embedding size, got ${channels}`);
  const half = channels / 2;
  const steps = timesteps.rank === 0 ? reshape(timesteps, [1]) : timesteps;
  if (steps.rank !== 1 || (steps.shape[0] !== batch && steps.shape[0] !== 1)) {
    throw new GraphError(`timesteps must be a scalar, [1] or [${batch}], got [${timesteps.shape}]`);
  }
  const t = expand(reshape(cast(steps, 'float32'), [-1, 1]), [batch, 1]);
  const phase = mul(t, g.constant('float32', [1, half], timestepFrequencies(half, freqShift)));
  return concat(flipSinToCos ? [cos(phase), sin(phase)] : [sin(phase), cos(phase)], 1);
}

function timeEmbedding(p: Params, x: Tensor, inFeatures: number, dim: number): Tensor {
  const h = silu(linearLayer(p.child('linear_1'), x, inFeatures, dim));
  return linearLayer(p.child('linear_2'), h, dim, dim);
}

/** A resnet, or a transformer below, is one recomputable segment: what a train step may recompute in its backward. */
function resnetBlock2D(p: Params, x: Tensor, inChannels: number, outChannels: number, c: Context, outputScaleFactor = 1): Tensor {
  return x.graph.recomputable(() => resnetBody(p, x, inChannels, outChannels, c, outputScaleFactor));
}

function resnetBody(p: Params, x: Tensor, inChannels: number, outChannels: number, c: Context, outputScaleFactor: number): Tensor {
  let h = groupNormLayer(p.child('norm1'), x, c.groups, inChannels, c.eps, { silu: true });
  h = conv2dLayer(p.child('conv1'), h, inChannels, outChannels, 3, { padding: 1 });
  const timeEmb = linearLayer(p.child('time_emb_proj'), silu(c.temb), c.temb.shape[1], outChannels);
  h = add(h, reshape(timeEmb, [0, 0, 1, 1]));
  h = groupNormLayer(p.child('norm2'), h, c.groups, outChannels, c.eps, { silu: true });
  h = conv2dLayer(p.child('conv2'), h, outChannels, outChannels, 3, { padding: 1 });
  const shortcut = inChannels === outChannels ? x : conv2dLayer(p.child('conv_shortcut'), x, inChannels, outChannels, 1);
  const out = add(shortcut, h);
  return outputScaleFactor === 1 ? out : div(out, outputScaleFactor);
}

/**
 * diffusers' Attention with AttnProcessor2_0: softmax(q k^T / sqrt(head_dim)) v over heads. `upcast_attention`
 * (scores in float32 under fp16) changes nothing here: the decomposed softmax is always float32.
 */
function attention(p: Params, x: Tensor, context: Tensor, dim: number, heads: number, c: Context): Tensor {
  const contextDim = context.shape[2];
  const q = c.linear(p.child('to_q'), x, dim, dim, false);
  const k = c.linear(p.child('to_k'), context, contextDim, dim, false);
  const v = c.linear(p.child('to_v'), context, contextDim, dim, false);
  const merged = scaledDotProductAttention(q, k, v, heads, { fused: c.fusedAttention });
  return c.linear(p.child('to_out').child(0), merged, dim, dim, true);
}

/** FeedForward with GEGLU: proj to 2 x inner, value * gelu(gate), back to dim. */
function feedForward(p: Params, x: Tensor, dim: number, c: Context): Tensor {
  const inner = dim * 4;
  const [value, gate] = chunk(c.linear(p.child('net').child(0).child('proj'), x, dim, inner * 2, true), 2, -1);
  return c.linear(p.child('net').child(2), mul(value, gelu(gate)), inner, dim, true);
}

function basicTransformerBlock(p: Params, x: Tensor, dim: number, heads: number, c: Context): Tensor {
  const normed = layerNormLayer(p.child('norm1'), x, dim, 1e-5);
  let h = add(attention(p.child('attn1'), normed, normed, dim, heads, c), x);
  h = add(attention(p.child('attn2'), layerNormLayer(p.child('norm2'), h, dim, 1e-5), c.encoderHiddenStates, dim, heads, c), h);
  return add(feedForward(p.child('ff'), layerNormLayer(p.child('norm3'), h, dim, 1e-5), dim, c), h);
}

/** Transformer2DModel on continuous inputs: GroupNorm, proj_in, transformer blocks over pixels, proj_out, residual. */
function transformer2D(p: Params, x: Tensor, channels: number, heads: number, layers: number, c: Context): Tensor {
  return x.graph.recomputable(() => transformerBody(p, x, channels, heads, layers, c));
}

function transformerBody(p: Params, x: Tensor, channels: number, heads: number, layers: number, c: Context): Tensor {
  const [batch, , height, width] = x.shape;
  const inner = channels; // heads * (channels / heads)
  let h = groupNormLayer(p.child('norm'), x, c.groups, channels, 1e-6);
  const toTokens = (t: Tensor) => reshape(transpose(t, [0, 2, 3, 1]), [batch, height * width, -1]);
  const toPixels = (t: Tensor) => transpose(reshape(t, [batch, height, width, -1]), [0, 3, 1, 2]);
  h = c.useLinearProjection
    ? c.linear(p.child('proj_in'), toTokens(h), channels, inner, true)
    : toTokens(conv2dLayer(p.child('proj_in'), h, channels, inner, 1));
  for (let i = 0; i < layers; i++) h = basicTransformerBlock(p.child('transformer_blocks').child(i), h, inner, heads, c);
  h = c.useLinearProjection
    ? toPixels(c.linear(p.child('proj_out'), h, inner, channels, true))
    : conv2dLayer(p.child('proj_out'), toPixels(h), inner, channels, 1);
  return add(h, x);
}

function downsample2D(p: Params, x: Tensor, channels: number, padding: number): Tensor {
  const q = p.child('downsamplers').child(0).child('conv');
  // padding 0 means torch's F.pad(x, (0, 1, 0, 1)) before the convolution
  const pads = padding === 0 ? [0, 0, 1, 1] : [padding, padding, padding, padding];
  return conv(x, q.weight('weight', [channels, channels, 3, 3]), q.weight('bias', [channels]), { strides: [2, 2], pads });
}

function upsample2D(p: Params, x: Tensor, channels: number): Tensor {
  const h = upsampleNearest(x, [1, 1, 2, 2]);
  return conv2dLayer(p.child('upsamplers').child(0).child('conv'), h, channels, channels, 3, { padding: 1 });
}

interface DownBlock {
  type: 'CrossAttnDownBlock2D' | 'DownBlock2D';
  inChannels: number;
  outChannels: number;
  layers: number;
  heads: number;
  transformerLayers: number;
  addDownsample: boolean;
}

/** CrossAttnDownBlock2D / DownBlock2D: resnets (each followed by a transformer when cross-attending), then a
 *  strided conv; every intermediate state is kept for the up path's skip connections. */
function downBlock(p: Params, x: Tensor, block: DownBlock, c: Context, padding: number): { h: Tensor; skips: Tensor[] } {
  const skips: Tensor[] = [];
  let h = x;
  for (let i = 0; i < block.layers; i++) {
    h = resnetBlock2D(p.child('resnets').child(i), h, i === 0 ? block.inChannels : block.outChannels, block.outChannels, c);
    if (block.type === 'CrossAttnDownBlock2D') {
      h = transformer2D(p.child('attentions').child(i), h, block.outChannels, block.heads, block.transformerLayers, c);
    }
    skips.push(h);
  }
  if (block.addDownsample) {
    h = downsample2D(p, h, block.outChannels, padding);
    skips.push(h);
  }
  return { h, skips };
}

function midBlock(p: Params, x: Tensor, channels: number, heads: number, transformerLayers: number, c: Context, scale: number): Tensor {
  let h = resnetBlock2D(p.child('resnets').child(0), x, channels, channels, c, scale);
  h = transformer2D(p.child('attentions').child(0), h, channels, heads, transformerLayers, c);
  return resnetBlock2D(p.child('resnets').child(1), h, channels, channels, c, scale);
}

interface UpBlock {
  type: 'CrossAttnUpBlock2D' | 'UpBlock2D';
  inChannels: number;
  prevOutputChannels: number;
  outChannels: number;
  layers: number;
  heads: number;
  transformerLayers: number;
  addUpsample: boolean;
}

/** UpBlock2D / CrossAttnUpBlock2D: each resnet takes the running state concatenated with the latest skip. */
function upBlock(p: Params, x: Tensor, skips: Tensor[], block: UpBlock, c: Context): Tensor {
  let h = x;
  for (let i = 0; i < block.layers; i++) {
    const skip = skips.pop()!;
    const skipChannels = i === block.layers - 1 ? block.inChannels : block.outChannels;
    const inChannels = (i === 0 ? block.prevOutputChannels : block.outChannels) + skipChannels;
    h = resnetBlock2D(p.child('resnets').child(i), concat([h, skip], 1), inChannels, block.outChannels, c);
    if (block.type === 'CrossAttnUpBlock2D') {
      h = transformer2D(p.child('attentions').child(i), h, block.outChannels, block.heads, block.transformerLayers, c);
    }
  }
  return block.addUpsample ? upsample2D(p, h, block.outChannels) : h;
}

/** Shapes the config cannot run on, refused while building rather than by onnxruntime at run time. */
function checkUNetInputs(config: UNetConfig, sample: Tensor, encoderHiddenStates: Tensor): void {
  const { raw, blockOutChannels: channels } = config;
  const [batch, inChannels, height, width] = sample.shape;
  if (sample.rank !== 4 || inChannels !== raw.in_channels) {
    throw new GraphError(`sample must be [batch, ${raw.in_channels}, height, width], got [${sample.shape}]`);
  }
  const factor = 2 ** (channels.length - 1);
  if (height % factor || width % factor) throw new GraphError(`sample size ${height}x${width} is not a multiple of ${factor}`);
  if (encoderHiddenStates.rank !== 3 || encoderHiddenStates.shape[0] !== batch) {
    throw new GraphError(`encoder_hidden_states must be [${batch}, tokens, dim], got [${encoderHiddenStates.shape}]`);
  }
  for (const dim of config.crossAttentionDim) {
    if (encoderHiddenStates.shape[2] !== dim) throw new GraphError(`encoder_hidden_states has width ${encoderHiddenStates.shape[2]}, cross_attention_dim is ${dim}`);
  }
}

/**
 * The noise prediction of UNet2DConditionModel(sample [B, in_channels, H, W], timesteps (scalar, [1] or [B], any
 * numeric dtype), encoderHiddenStates [B, tokens, cross_attention_dim]) -> [B, out_channels, H, W], float32 in and
 * out whatever `options.precision` computes in.
 */
export function buildUNet(
  g: Graph, config: UNetConfig, sample: Tensor, timesteps: Tensor, encoderHiddenStates: Tensor, options: UNetOptions = {},
): Tensor {
  checkUNetInputs(config, sample, encoderHiddenStates);
  const { raw, blockOutChannels: channels } = config;
  const { dtype, fusedAttention, weightStorage = dtype } = options.precision ?? FLOAT32;
  const levels = channels.length;
  const batch = sample.shape[0];
  const p = new Params(g, '', dtype, weightStorage);
  // The sinusoids stay float32: timesteps up to 1000 times frequencies lose their phase in fp16.
  const tEmb = cast(timeProj(g, timesteps, batch, channels[0], raw.flip_sin_to_cos, raw.freq_shift), dtype);
  const c: Context = {
    temb: timeEmbedding(p.child('time_embedding'), tEmb, channels[0], config.timeEmbedDim),
    encoderHiddenStates: cast(encoderHiddenStates, dtype),
    groups: raw.norm_num_groups,
    eps: raw.norm_eps,
    useLinearProjection: raw.use_linear_projection,
    linear: options.linear ?? linearLayer,
    fusedAttention,
  };

  let h = raw.center_input_sample ? add(mul(cast(sample, dtype), 2), -1) : cast(sample, dtype);
  h = conv2dLayer(p.child('conv_in'), h, raw.in_channels, channels[0], raw.conv_in_kernel, { padding: (raw.conv_in_kernel - 1) / 2 });

  const skips: Tensor[] = [h];
  raw.down_block_types.forEach((type, i) => {
    const block = downBlock(p.child('down_blocks').child(i), h, {
      type, inChannels: i === 0 ? channels[0] : channels[i - 1], outChannels: channels[i], layers: config.layersPerBlock[i],
      heads: config.numAttentionHeads[i], transformerLayers: config.transformerLayersPerBlock[i], addDownsample: i < levels - 1,
    }, c, raw.downsample_padding);
    h = block.h;
    skips.push(...block.skips);
  });

  if (raw.mid_block_type) {
    h = midBlock(p.child('mid_block'), h, channels[levels - 1], config.numAttentionHeads[levels - 1],
      config.transformerLayersPerBlock[levels - 1], c, raw.mid_block_scale_factor);
  }

  const reversed = [...channels].reverse();
  const reversedHeads = [...config.numAttentionHeads].reverse();
  const reversedLayers = [...config.layersPerBlock].reverse();
  raw.up_block_types.forEach((type, i) => {
    h = upBlock(p.child('up_blocks').child(i), h, skips, {
      type, inChannels: reversed[Math.min(i + 1, levels - 1)], prevOutputChannels: reversed[Math.max(i - 1, 0)],
      outChannels: reversed[i], layers: reversedLayers[i] + 1, heads: reversedHeads[i],
      transformerLayers: config.reverseTransformerLayersPerBlock[i], addUpsample: i < levels - 1,
    }, c);
  });

  h = groupNormLayer(p.child('conv_norm_out'), h, raw.norm_num_groups, channels[0], raw.norm_eps, { silu: true });
  const out = conv2dLayer(p.child('conv_out'), h, channels[0], raw.out_channels, raw.conv_out_kernel, { padding: (raw.conv_out_kernel - 1) / 2 });
  return cast(out, 'float32');
}
