import { attr, attrValue, check, defineOp, type Tensor } from '../graph';
import { formatShape, normalizeAxis, sameShape } from '../shape';
import { add, div, erf, less, mul, sigmoid, sqrt, sub, where } from './elementwise';
import { gemm } from './matmul';
import { reduceMean, reduceSum } from './reduce';
import { reshape, transpose } from './shape-ops';

/**
 * torch.nn.Linear: x @ weight^T + bias, weight stored [out, in] as in checkpoints. One Gemm with transB over the
 * rows of x (leading axes folded, then restored): the weight is never transposed into a copy, neither here nor in
 * the gradients (Gemm's rule flips its trans attributes), so a frozen weight is held once.
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  check(weight.rank === 2 && x.shape[x.rank - 1] === weight.shape[1],
    `linear: input ${x.toString()} does not match weight ${weight.toString()}`);
  const rows = x.rank === 2 ? x : reshape(x, [-1, weight.shape[1]]);
  const y = gemm(rows, weight, bias, { transB: true });
  return x.rank === 2 ? y : reshape(y, [...x.shape.slice(0, -1), weight.shape[0]]);
}

export const silu = (x: Tensor): Tensor => mul(x, sigmoid(x));

/** The exact (erf) GELU, torch's default. */
export const gelu = (x: Tensor): Tensor => mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1));

/** torch.clamp(x, min, max), from Where so every operator in it already has a gradient rule. */
export const clamp = (x: Tensor, min: number, max: number): Tensor => where(less(x, min), min, where(less(max, x), max, x));

/** CLIP's quick_gelu: x * sigmoid(1.702 x). */
export const quickGelu = (x: Tensor): Tensor => mul(x, sigmoid(mul(x, 1.702)));

/** x - mean(x) and sqrt(var(x) + eps) over `axes` (biased variance, kept dims): what a normalization divides. */
function moments(x: Tensor, axes: number[], eps: number): { centered: Tensor; std: Tensor } {
  const centered = sub(x, reduceMean(x, axes));
  return { centered, std: sqrt(add(reduceMean(mul(centered, centered), axes), eps)) };
}

/**
 * ONNX LayerNormalization: standardizes over the axes from `axis` to the last, then scale (and bias), shaped
 * as those axes. One fused kernel where the formula from ReduceMean, Sub, Mul, Add, Sqrt and Div takes seven.
 */
const LAYER_NORMALIZATION = defineOp('LayerNormalization', ([x, scale, bias], attrs) => {
  const axis = normalizeAxis(attrValue(attrs, 'axis', -1), x!.rank);
  check(axis !== undefined, 'axis out of range');
  const normalized = x!.shape.slice(axis);
  for (const p of [scale, bias]) if (p) check(sameShape(p.shape, normalized), `scale and bias must be shaped ${formatShape(normalized)}`);
  return [{ dtype: x!.dtype, shape: x!.shape }];
});

// Recomputes the statistics from x rather than keeping them from the forward pass. With g = dy * scale and
// n the normalized input: dx = (g - mean(g) - n * mean(g * n)) / std.
LAYER_NORMALIZATION.grad = ({ inputs: [x, scale, bias], attrs }, [dy], [wx, wscale, wbias]) => {
  const axis = normalizeAxis(attrValue(attrs, 'axis', -1), x!.rank)!;
  const axes = x!.shape.map((_, i) => i).slice(axis);
  const leading = x!.shape.map((_, i) => i).slice(0, axis);
  const { centered, std } = moments(x!, axes, attrValue(attrs, 'epsilon', 1e-5));
  const normalized = div(centered, std);
  const g = mul(dy!, scale!);
  const sumLeading = (t: Tensor) => (leading.length ? reduceSum(t, leading, false) : t);
  return [
    wx ? div(sub(sub(g, reduceMean(g, axes)), mul(normalized, reduceMean(mul(g, normalized), axes))), std) : undefined,
    wscale ? sumLeading(mul(dy!, normalized)) : undefined,
    wbias && bias ? sumLeading(dy!) : undefined,
  ];
};

/** torch.nn.LayerNorm over the last dimension. */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
  return x.graph.apply(LAYER_NORMALIZATION, [x, weight, bias], { axis: attr.int(-1), epsilon: attr.float(eps) })[0];
}

/**
 * onnxruntime's com.microsoft GroupNorm, which only its CUDA provider runs: NHWC input (float16 or float32), float32
 * gamma and beta, statistics accumulated in float32, SiLU fused when `activation` is 1.
 */
const CONTRIB_GROUP_NORM = defineOp('GroupNorm', ([x, gamma, beta], attrs) => {
  const channels = x!.shape[3];
  check(x!.rank === 4, 'input must be NHWC');
  check(channels % (attrs.groups?.value as number) === 0, `${channels} channels do not divide into ${attrs.groups?.value} groups`);
  for (const p of [gamma, beta]) check(p!.dtype === 'float32' && sameShape(p!.shape, [channels]), `gamma and beta must be float32[${channels}]`);
  return [{ dtype: x!.dtype, shape: x!.shape }];
}, 'com.microsoft');

/**
 * torch.nn.GroupNorm on [N, C, ...spatial], then SiLU when `silu` (how every resnet uses it); weight and bias are
 * float32 whatever the input. Float16 inputs go to onnxruntime's contrib GroupNorm (CUDA only): a composed norm in
 * float16 loses the statistics (relative error 0.995 at the UNet's shapes, NaN at the VAE's), and the contrib kernel
 * keeps them in float32 in one pass, between two transposes to and from NHWC. Other dtypes are composed, not a
 * LayerNormalization over [N, groups, -1]: onnxruntime's CUDA kernel gives each row one thread block, and the few
 * rows of a GroupNorm are long (a 512 px VAE decode took 31 ms that way, 26 ms composed).
 */
export function groupNorm(x: Tensor, groups: number, weight: Tensor, bias: Tensor, eps: number, { silu: activation = false } = {}): Tensor {
  const [n, c, ...spatial] = x.shape;
  check(c % groups === 0, `groupNorm: ${c} channels do not divide into ${groups} groups`);
  if (x.dtype === 'float16') {
    const attrs = { groups: attr.int(groups), epsilon: attr.float(eps), activation: attr.int(activation ? 1 : 0), channels_last: attr.int(1) };
    const [y] = x.graph.apply(CONTRIB_GROUP_NORM, [transpose(x, [0, 2, 3, 1]), weight, bias], attrs);
    return transpose(y, [0, 3, 1, 2]);
  }
  const { centered, std } = moments(reshape(x, [n, groups, -1]), [-1], eps);
  const normalized = reshape(div(centered, std), x.shape);
  const perChannel = [c, ...spatial.map(() => 1)];
  const y = add(mul(normalized, reshape(weight, perChannel)), reshape(bias, perChannel));
  return activation ? silu(y) : y;
}
