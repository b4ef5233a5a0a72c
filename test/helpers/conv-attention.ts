import type { TensorData } from '../../src/engine/runtime';
import {
  add, conv, Graph, groupNorm, layerNorm, linear, matmul, mul, reduceMean, reshape, silu, softmax, sub, type Tensor,
  transpose, upsampleNearest,
} from '../../src/engine/graph';
import { uniform } from './random';

export interface ConvAttentionNet {
  graph: Graph;
  loss: Tensor;
  /** Every weight's initial values, by name. */
  weights: Record<string, Float32Array>;
  /** A fixed batch: images and the targets the net learns to map them to. */
  batch: Record<string, TensorData>;
}

/**
 * A miniature of the UNet's building blocks: conv, GroupNorm + SiLU, strided conv down, one
 * self-attention block over the pixels with LayerNorm and a residual, nearest upsampling, conv out;
 * mean squared error against a target image (here a fixed mix of the input's channels).
 */
export function convAttentionNet({ batch = 2, size = 8, channels = 8, groups = 2 } = {}): ConvAttentionNet {
  const g = new Graph('conv-attention');
  const weights: Record<string, Float32Array> = {};
  let seed = 1;
  const weight = (name: string, shape: number[], init: 'fan-in' | 'ones' | 'zeros' = 'fan-in') => {
    const size = shape.reduce((a, b) => a * b, 1);
    const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
    const data = init === 'fan-in' ? uniform(size, seed++, 1 / Math.sqrt(fanIn)) : new Float32Array(size).fill(init === 'ones' ? 1 : 0);
    weights[name] = data;
    return g.weight(name, shape, data);
  };
  const conv3 = (name: string, x: Tensor, cin: number, cout: number, stride = 1) =>
    conv(x, weight(`${name}.weight`, [cout, cin, 3, 3]), weight(`${name}.bias`, [cout], 'zeros'), { strides: [stride, stride], pads: [1, 1, 1, 1] });
  const dense = (name: string, x: Tensor, features: number) => linear(x, weight(`${name}.weight`, [features, features]), weight(`${name}.bias`, [features], 'zeros'));

  const images = g.input('images', 'float32', [batch, 3, size, size]);
  const target = g.input('target', 'float32', [batch, 3, size, size]);
  let h = conv3('conv_in', images, 3, channels);
  h = silu(groupNorm(h, groups, weight('norm.weight', [channels], 'ones'), weight('norm.bias', [channels], 'zeros'), 1e-5));
  h = conv3('down', h, channels, channels, 2);
  const half = size / 2;
  const tokens = transpose(reshape(h, [batch, channels, half * half]), [0, 2, 1]);
  const n = layerNorm(tokens, weight('attn.norm.weight', [channels], 'ones'), weight('attn.norm.bias', [channels], 'zeros'), 1e-5);
  const q = dense('attn.to_q', n, channels);
  const k = dense('attn.to_k', n, channels);
  const v = dense('attn.to_v', n, channels);
  const scores = mul(matmul(q, transpose(k, [0, 2, 1])), 1 / Math.sqrt(channels));
  const attended = add(tokens, dense('attn.to_out', matmul(softmax(scores, -1), v), channels));
  h = reshape(transpose(attended, [0, 2, 1]), [batch, channels, half, half]);
  h = silu(conv3('up', upsampleNearest(h, [1, 1, 2, 2]), channels, channels));
  const out = conv3('conv_out', h, channels, 3);
  const error = sub(out, target);
  const loss = reduceMean(mul(error, error), [0, 1, 2, 3], false);

  const pixels = batch * 3 * size * size;
  const x = uniform(pixels, 1000);
  const y = new Float32Array(pixels);
  const plane = size * size;
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < plane; p++) {
        const at = (channel: number) => x[(b * 3 + channel) * plane + p];
        y[(b * 3 + c) * plane + p] = 0.5 * at(c) - 0.3 * at((c + 1) % 3) + 0.1;
      }
    }
  }
  const dims = [batch, 3, size, size];
  return { graph: g, loss, weights, batch: { images: { dtype: 'float32', dims, data: x }, target: { dtype: 'float32', dims, data: y } } };
}
