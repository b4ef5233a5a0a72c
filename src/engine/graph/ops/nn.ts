import { check, type Tensor } from '../graph';
import { add, div, erf, less, mul, sigmoid, sqrt, sub, where } from './elementwise';
import { matmul } from './matmul';
import { reduceMean } from './reduce';
import { reshape, transpose } from './shape-ops';

/** torch.nn.Linear: x @ weight^T + bias, weight stored [out, in] as in checkpoints. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  check(weight.rank === 2 && x.shape[x.rank - 1] === weight.shape[1],
    `linear: input ${x.toString()} does not match weight ${weight.toString()}`);
  const y = matmul(x, transpose(weight, [1, 0]));
  return bias ? add(y, bias) : y;
}

export const silu = (x: Tensor): Tensor => mul(x, sigmoid(x));

/** The exact (erf) GELU, torch's default. */
export const gelu = (x: Tensor): Tensor => mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1));

/** torch.clamp(x, min, max), from Where so every operator in it already has a gradient rule. */
export const clamp = (x: Tensor, min: number, max: number): Tensor => where(less(x, min), min, where(less(max, x), max, x));

/** CLIP's quick_gelu: x * sigmoid(1.702 x). */
export const quickGelu = (x: Tensor): Tensor => mul(x, sigmoid(mul(x, 1.702)));

/** Normalizes over the trailing `axes` count of dimensions: (x - mean) / sqrt(var + eps), biased variance. */
function normalize(x: Tensor, axes: number[], eps: number): Tensor {
  const centered = sub(x, reduceMean(x, axes));
  const variance = reduceMean(mul(centered, centered), axes);
  return div(centered, sqrt(add(variance, eps)));
}

/** torch.nn.LayerNorm over the last dimension. */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
  return add(mul(normalize(x, [-1], eps), weight), bias);
}

/** torch.nn.GroupNorm on [N, C, ...spatial]: statistics per sample and group of C/groups channels. */
export function groupNorm(x: Tensor, groups: number, weight: Tensor, bias: Tensor, eps: number): Tensor {
  const [n, c, ...spatial] = x.shape;
  check(c % groups === 0, `groupNorm: ${c} channels do not divide into ${groups} groups`);
  const grouped = reshape(x, [n, groups, -1]);
  const normalized = reshape(normalize(grouped, [-1], eps), x.shape);
  const perChannel = [c, ...spatial.map(() => 1)];
  return add(mul(normalized, reshape(weight, perChannel)), reshape(bias, perChannel));
}
