import {
  add, cast, conv, groupNorm, layerNorm, linear, matmul, multiHeadAttention, mul, reshape, softmax, type Tensor, transpose,
} from '../graph';
import { type Params } from './params';

/** The torch.nn layers diffusers and transformers models are made of, with their checkpoint names. */

export function linearLayer(p: Params, x: Tensor, inFeatures: number, outFeatures: number, bias = true): Tensor {
  return linear(x, p.weight('weight', [outFeatures, inFeatures]), bias ? p.weight('bias', [outFeatures]) : undefined);
}

export function conv2dLayer(
  p: Params, x: Tensor, inChannels: number, outChannels: number, kernel: number,
  { stride = 1, padding = 0, bias = true } = {},
): Tensor {
  return conv(x, p.weight('weight', [outChannels, inChannels, kernel, kernel]), bias ? p.weight('bias', [outChannels]) : undefined, {
    strides: [stride, stride],
    pads: [padding, padding, padding, padding],
  });
}

/** GroupNorm (then SiLU when `silu`); its weight and bias stay float32 in a float16 model, as `groupNorm` takes them. */
export function groupNormLayer(p: Params, x: Tensor, groups: number, channels: number, eps: number, { silu = false } = {}): Tensor {
  return groupNorm(x, groups, p.weight('weight', [channels], 'float32'), p.weight('bias', [channels], 'float32'), eps, { silu });
}

export function layerNormLayer(p: Params, x: Tensor, features: number, eps: number): Tensor {
  return layerNorm(x, p.weight('weight', [features]), p.weight('bias', [features]), eps);
}

/**
 * softmax(q k^T / sqrt(head_dim) + mask) v over `heads` heads, on projections [batch, tokens, heads * head_dim]:
 * torch's scaled_dot_product_attention as diffusers' and transformers' attention modules call it. `fused` makes it
 * one com.microsoft MultiHeadAttention (no mask here; float32 and float16 kernels only); the decomposed form
 * computes the softmax in float32 whatever the model's dtype, as diffusers' `upcast_softmax` does.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, heads: number, { fused = false, mask }: { fused?: boolean; mask?: Tensor } = {}): Tensor {
  const [batch, tokens, width] = q.shape;
  const headDim = width / heads;
  if (fused) {
    if (mask) throw new Error('scaledDotProductAttention: the fused form takes no mask');
    return multiHeadAttention(q, k, v, heads, 1 / Math.sqrt(headDim));
  }
  const splitHeads = (t: Tensor) => transpose(reshape(t, [batch, -1, heads, t.shape[2] / heads]), [0, 2, 1, 3]);
  const scores = cast(matmul(mul(splitHeads(q), 1 / Math.sqrt(headDim)), transpose(splitHeads(k), [0, 1, 3, 2])), 'float32');
  const probabilities = cast(softmax(mask ? add(scores, mask) : scores, -1), q.dtype);
  return reshape(transpose(matmul(probabilities, splitHeads(v)), [0, 2, 1, 3]), [batch, tokens, -1]);
}
