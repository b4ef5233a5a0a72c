import { conv, groupNorm, layerNorm, linear, type Tensor } from '../graph';
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

export function groupNormLayer(p: Params, x: Tensor, groups: number, channels: number, eps: number): Tensor {
  return groupNorm(x, groups, p.weight('weight', [channels]), p.weight('bias', [channels]), eps);
}

export function layerNormLayer(p: Params, x: Tensor, features: number, eps: number): Tensor {
  return layerNorm(x, p.weight('weight', [features]), p.weight('bias', [features]), eps);
}
