import { attr, attrValue, check, defineOp, type Graph, type Tensor } from '../graph';
import { formatShape, normalizeAxis, sameShape, type Shape, sizeOf } from '../shape';
import { add, div, erf, less, mul, sigmoid, sqrt, sub, where } from './elementwise';
import { matmul } from './matmul';
import { reduceMean, reduceSum } from './reduce';
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

/** (x - mean) / sqrt(var + eps) over `axes`, biased variance, and the 1 / sqrt(var + eps) it divides by. */
function standardize(x: Tensor, axes: number[], eps: number): { normalized: Tensor; inverseStd: Tensor } {
  const centered = sub(x, reduceMean(x, axes));
  const inverseStd = div(1, sqrt(add(reduceMean(mul(centered, centered), axes), eps)));
  return { normalized: mul(centered, inverseStd), inverseStd };
}

/**
 * ONNX LayerNormalization: standardizes over the axes from `axis` to the last, then scale (and bias), shaped
 * as those axes. One fused kernel on every provider, where the same formula from ReduceMean, Sub, Mul, Add, Sqrt
 * and Div takes seven, and keeps fewer full-size intermediates for the backward pass.
 */
export const LAYER_NORMALIZATION = defineOp('LayerNormalization', ([x, scale, bias], attrs) => {
  const axis = normalizeAxis(attrValue(attrs, 'axis', -1), x!.rank);
  check(axis !== undefined, 'axis out of range');
  const normalized = x!.shape.slice(axis);
  for (const p of [scale, bias]) if (p) check(sameShape(p.shape, normalized), `scale and bias must be shaped ${formatShape(normalized)}`);
  return [{ dtype: x!.dtype, shape: x!.shape }];
});

function layerNormalization(x: Tensor, scale: Tensor, bias: Tensor | undefined, axis: number, eps: number): Tensor {
  return x.graph.apply(LAYER_NORMALIZATION, [x, scale, bias], { axis: attr.int(axis), epsilon: attr.float(eps) })[0];
}

// Recomputes the statistics from x rather than keeping them from the forward pass. With g = dy * scale:
// dx = inverseStd * (g - mean(g) - normalized * mean(g * normalized)).
LAYER_NORMALIZATION.grad = ({ inputs: [x, scale, bias], attrs }, [dy], [wx, wscale, wbias]) => {
  const axis = normalizeAxis(attrValue(attrs, 'axis', -1), x!.rank)!;
  const axes = x!.shape.map((_, i) => i).slice(axis);
  const leading = axes.length < x!.rank ? x!.shape.map((_, i) => i).slice(0, axis) : [];
  const { normalized, inverseStd } = standardize(x!, axes, attrValue(attrs, 'epsilon', 1e-5));
  const g = unitScaleTensors.has(scale!) ? dy! : mul(dy!, scale!);
  const sumLeading = (t: Tensor) => (leading.length ? reduceSum(t, leading, false) : t);
  return [
    wx ? mul(inverseStd, sub(sub(g, reduceMean(g, axes)), mul(normalized, reduceMean(mul(g, normalized), axes)))) : undefined,
    wscale ? sumLeading(mul(dy!, normalized)) : undefined,
    wbias && bias ? sumLeading(dy!) : undefined,
  ];
};

/** Ones shaped `shape`, one constant per graph and shape: the unit scale of a normalization without its own. */
const unitScales = new WeakMap<Graph, Map<string, Tensor>>();
const unitScaleTensors = new WeakSet<Tensor>();
function unitScale(like: Tensor, shape: Shape): Tensor {
  const byShape = unitScales.get(like.graph) ?? new Map<string, Tensor>();
  unitScales.set(like.graph, byShape);
  const key = `${like.dtype}${formatShape(shape)}`;
  let ones = byShape.get(key);
  if (!ones) {
    const size = sizeOf(shape);
    ones = like.graph.constant(like.dtype, shape, like.dtype === 'float64' ? new Float64Array(size).fill(1) : new Float32Array(size).fill(1));
    byShape.set(key, ones);
    unitScaleTensors.add(ones);
  }
  return ones;
}

/** torch.nn.LayerNorm over the last dimension. */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps: number): Tensor {
  return layerNormalization(x, weight, bias, -1, eps);
}

/** torch.nn.GroupNorm on [N, C, ...spatial]: statistics per sample and group of C/groups channels. */
export function groupNorm(x: Tensor, groups: number, weight: Tensor, bias: Tensor, eps: number): Tensor {
  const [n, c, ...spatial] = x.shape;
  check(c % groups === 0, `groupNorm: ${c} channels do not divide into ${groups} groups`);
  const grouped = reshape(x, [n, groups, -1]);
  const normalized = reshape(layerNormalization(grouped, unitScale(x, [grouped.shape[2]]), undefined, -1, eps), x.shape);
  const perChannel = [c, ...spatial.map(() => 1)];
  return add(mul(normalized, reshape(weight, perChannel)), reshape(bias, perChannel));
}
