import { attr, attrValue, check, defineOp, type Tensor } from '../graph';
import { broadcastShapes, formatShape, normalizeAxis, sameShape, type Shape, sizeOf } from '../shape';
import { constantInts, int64s } from './constants';
import { scalar } from './elementwise';
import { reduceSum, unbroadcast } from './reduce';

const RESHAPE = defineOp('Reshape', ([x, shape]) => {
  const target = constantInts(shape, 'shape');
  check(sizeOf(target) === sizeOf(x!.shape) && target.every((d) => d >= 0),
    `cannot reshape ${formatShape(x!.shape)} to ${formatShape(target)}`);
  return [{ dtype: x!.dtype, shape: target }];
});
/** Reshape with numpy conventions: one -1 is inferred, 0 copies the input's dimension. */
export function reshape(x: Tensor, shape: Shape): Tensor {
  const copied = shape.map((d, i) => (d === 0 ? x.shape[i] : d));
  const known = sizeOf(copied.filter((d) => d !== -1));
  const resolved = copied.map((d) => (d === -1 ? sizeOf(x.shape) / known : d));
  check(Number.isInteger(sizeOf(resolved)) && copied.filter((d) => d === -1).length <= 1,
    `Reshape: cannot reshape ${formatShape(x.shape)} to ${formatShape(shape)}`);
  return x.graph.apply(RESHAPE, [x, int64s(x.graph, resolved)])[0];
}
RESHAPE.grad = ({ inputs: [x] }, [dy]) => [reshape(dy!, x!.shape)];

const TRANSPOSE = defineOp('Transpose', ([x], attrs) => {
  const perm = attrValue<number[]>(attrs, 'perm', [...x!.shape.keys()].reverse());
  check(perm.length === x!.rank && [...perm].sort().every((p, i) => p === i), `perm ${formatShape(perm)} is not a permutation of rank ${x!.rank}`);
  return [{ dtype: x!.dtype, shape: perm.map((p) => x!.shape[p]) }];
});
export const transpose = (x: Tensor, perm: number[]): Tensor => x.graph.apply(TRANSPOSE, [x], { perm: attr.ints(perm) })[0];
TRANSPOSE.grad = ({ inputs: [x], attrs }, [dy]) => {
  const perm = attrValue<number[]>(attrs, 'perm', [...x!.shape.keys()].reverse());
  const inverse = perm.map((_, i) => perm.indexOf(i));
  return [transpose(dy!, inverse)];
};

const CONCAT = defineOp('Concat', (inputs, attrs) => {
  const first = inputs[0]!;
  const axis = normalizeAxis(attrValue(attrs, 'axis', 0), first.rank);
  check(axis !== undefined, 'axis out of range');
  const shape = [...first.shape];
  for (const t of inputs.slice(1)) {
    check(t!.dtype === first.dtype && t!.rank === first.rank && t!.shape.every((d, i) => i === axis || d === first.shape[i]),
      `inputs differ off the concat axis: ${inputs.map((i) => formatShape(i!.shape)).join(', ')}`);
    shape[axis] += t!.shape[axis];
  }
  return [{ dtype: first.dtype, shape }];
});
export const concat = (inputs: Tensor[], axis: number): Tensor =>
  inputs.length === 1 ? inputs[0] : inputs[0].graph.apply(CONCAT, inputs, { axis: attr.int(axis) })[0];
CONCAT.grad = ({ inputs, attrs }, [dy]) => {
  const axis = normalizeAxis(attrValue(attrs, 'axis', 0), dy!.rank)!;
  return split(dy!, inputs.map((t) => t!.shape[axis]), axis);
};

const SPLIT = defineOp('Split', ([x, split], attrs) => {
  const axis = normalizeAxis(attrValue(attrs, 'axis', 0), x!.rank);
  check(axis !== undefined, 'axis out of range');
  const sizes = constantInts(split, 'split');
  check(sizes.reduce((a, b) => a + b, 0) === x!.shape[axis], `sizes ${formatShape(sizes)} do not sum to ${x!.shape[axis]}`);
  return sizes.map((size) => ({ dtype: x!.dtype, shape: x!.shape.map((d, i) => (i === axis ? size : d)) }));
});
export const split = (x: Tensor, sizes: number[], axis: number): Tensor[] =>
  x.graph.apply(SPLIT, [x, int64s(x.graph, sizes)], { axis: attr.int(axis) });
/** Splits into `parts` equal chunks, as torch.chunk does when the axis divides evenly. */
export const chunk = (x: Tensor, parts: number, axis: number): Tensor[] =>
  split(x, Array(parts).fill(x.shape[normalizeAxis(axis, x.rank)!] / parts), axis);
// Outputs that receive no gradient contribute zeros.
SPLIT.grad = ({ outputs, attrs }, dys) =>
  [concat(outputs.map((y, i) => dys[i] ?? zeros(y)), attrValue(attrs, 'axis', 0))];

/** Slice with non-negative, clamped bounds; shape inference follows ONNX's clamping rules. */
const SLICE = defineOp('Slice', ([x, startsT, endsT, axesT, stepsT]) => {
  const starts = constantInts(startsT, 'starts');
  const ends = constantInts(endsT, 'ends');
  const axes = axesT ? constantInts(axesT, 'axes') : starts.map((_, i) => i);
  const steps = stepsT ? constantInts(stepsT, 'steps') : starts.map(() => 1);
  const shape = [...x!.shape];
  axes.forEach((a, i) => {
    const axis = normalizeAxis(a, x!.rank);
    check(axis !== undefined, `axis ${a} out of range`);
    check(steps[i] > 0, 'only positive steps are supported');
    const dim = x!.shape[axis];
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
    shape[axis] = Math.max(0, Math.ceil((clamp(ends[i]) - clamp(starts[i])) / steps[i]));
  });
  return [{ dtype: x!.dtype, shape }];
});
export const slice = (x: Tensor, starts: number[], ends: number[], axes: number[], steps?: number[]): Tensor => {
  const g = x.graph;
  const inputs = [x, int64s(g, starts), int64s(g, ends), int64s(g, axes)];
  if (steps) inputs.push(int64s(g, steps));
  return g.apply(SLICE, inputs)[0];
};
// The gradient lands in a zero tensor at the sliced positions: strided axes interleave zeros
// between the gradient's elements, then Pad places (or crops) the result within each axis.
SLICE.grad = ({ inputs: [x, startsT, , axesT, stepsT], outputs: [y] }, [dy]) => {
  const starts = constantInts(startsT, 'starts');
  const axes = axesT ? constantInts(axesT, 'axes') : starts.map((_, i) => i);
  const steps = stepsT ? constantInts(stepsT, 'steps') : starts.map(() => 1);
  let grad = dy!;
  const pads = Array(x!.rank * 2).fill(0);
  axes.forEach((a, i) => {
    const axis = normalizeAxis(a, x!.rank)!;
    const dim = x!.shape[axis];
    const count = y.shape[axis];
    const start = Math.min(Math.max(starts[i] < 0 ? starts[i] + dim : starts[i], 0), dim);
    let span = count;
    if (steps[i] > 1 && count > 0) {
      const shape = [...grad.shape];
      const spread = unsqueeze(grad, [axis + 1]);
      const gapShape = shape.map((d, j) => (j === axis ? count : d));
      gapShape.splice(axis + 1, 0, steps[i] - 1);
      const gaps = zeros(spread, gapShape);
      grad = reshape(concat([spread, gaps], axis + 1), shape.map((d, j) => (j === axis ? count * steps[i] : d)));
      span = count * steps[i];
    }
    pads[axis] = start;
    pads[x!.rank + axis] = dim - start - span;
  });
  return [pad(grad, pads)];
};

const SQUEEZE = defineOp('Squeeze', ([x, axesT]) => {
  const axes = constantInts(axesT, 'axes').map((a) => normalizeAxis(a, x!.rank));
  check(axes.every((a) => a !== undefined && x!.shape[a] === 1), `cannot squeeze axes of ${formatShape(x!.shape)}`);
  return [{ dtype: x!.dtype, shape: x!.shape.filter((_, i) => !axes.includes(i)) }];
});
export const squeeze = (x: Tensor, axes: number[]): Tensor => x.graph.apply(SQUEEZE, [x, int64s(x.graph, axes)])[0];
SQUEEZE.grad = ({ inputs: [x] }, [dy]) => [reshape(dy!, x!.shape)];

const UNSQUEEZE = defineOp('Unsqueeze', ([x, axesT]) => {
  const rank = x!.rank + constantInts(axesT, 'axes').length;
  const axes = constantInts(axesT, 'axes').map((a) => normalizeAxis(a, rank));
  check(axes.every((a) => a !== undefined) && new Set(axes).size === axes.length, 'axes out of range or repeated');
  const rest = [...x!.shape];
  return [{ dtype: x!.dtype, shape: Array.from({ length: rank }, (_, i) => (axes.includes(i) ? 1 : rest.shift()!)) }];
});
export const unsqueeze = (x: Tensor, axes: number[]): Tensor => x.graph.apply(UNSQUEEZE, [x, int64s(x.graph, axes)])[0];
UNSQUEEZE.grad = ({ inputs: [x] }, [dy]) => [reshape(dy!, x!.shape)];

const EXPAND = defineOp('Expand', ([x, shapeT]) => {
  const shape = broadcastShapes(x!.shape, constantInts(shapeT, 'shape'));
  check(shape, `cannot expand ${formatShape(x!.shape)} to ${formatShape(constantInts(shapeT, 'shape'))}`);
  return [{ dtype: x!.dtype, shape }];
});
export const expand = (x: Tensor, shape: Shape): Tensor => x.graph.apply(EXPAND, [x, int64s(x.graph, shape)])[0];
EXPAND.grad = ({ inputs: [x] }, [dy]) => [unbroadcast(dy!, x!.shape)];

/** Zeros of `like`'s dtype and the given shape (default `like`'s), as a broadcast scalar. */
export const zeros = (like: Tensor, shape: Shape = like.shape): Tensor => expand(scalar(like.graph, 0, like.dtype), shape);

/** Constant-mode Pad; `pads` in ONNX order (all begins, then all ends), negative values crop. */
const PAD = defineOp('Pad', ([x, padsT, value]) => {
  const pads = constantInts(padsT, 'pads');
  check(pads.length === 2 * x!.rank, `pads must have ${2 * x!.rank} values`);
  check(!value || value.dtype === x!.dtype, 'the pad value must have the input dtype');
  const shape = x!.shape.map((d, i) => d + pads[i] + pads[x!.rank + i]);
  check(shape.every((d) => d >= 0), `pads ${formatShape(pads)} crop ${formatShape(x!.shape)} below zero`);
  return [{ dtype: x!.dtype, shape }];
});
export const pad = (x: Tensor, pads: number[]): Tensor =>
  pads.every((p) => p === 0) ? x : x.graph.apply(PAD, [x, int64s(x.graph, pads)], { mode: attr.string('constant') })[0];
PAD.grad = ({ inputs: [, padsT], attrs }, [dy]) => {
  check(attrValue<string>(attrs, 'mode', 'constant') === 'constant', 'Pad: only constant mode has a gradient');
  return [pad(dy!, constantInts(padsT, 'pads').map((p) => -p))];
};

/**
 * ScatterElements: `data` with `updates` written (or, with reduction 'add', added) at `indices`
 * along `axis`; indices and updates share a shape of data's rank. (ScatterND with reduction add
 * would be shorter to use, but onnxruntime's CPU kernel adds repeated indices from several threads
 * at once and loses updates; ScatterElements accumulates each output element on one thread.)
 */
const SCATTER_ELEMENTS = defineOp('ScatterElements', ([data, indices, updates], attrs) => {
  const axis = normalizeAxis(attrValue(attrs, 'axis', 0), data!.rank);
  check(axis !== undefined, 'axis out of range');
  check(indices!.dtype === 'int64' || indices!.dtype === 'int32', `indices must be integers, got ${indices!.dtype}`);
  check(updates!.dtype === data!.dtype && sameShape(updates!.shape, indices!.shape) && updates!.rank === data!.rank
    && updates!.shape.every((d, i) => i === axis || d <= data!.shape[i]),
  `updates ${updates!.dtype}${formatShape(updates!.shape)} must match indices ${formatShape(indices!.shape)} and fit data ${data!.dtype}${formatShape(data!.shape)}`);
  return [{ dtype: data!.dtype, shape: data!.shape }];
});
export const scatterAdd = (data: Tensor, indices: Tensor, updates: Tensor, axis: number): Tensor =>
  data.graph.apply(SCATTER_ELEMENTS, [data, indices, updates], { axis: attr.int(axis), reduction: attr.string('add') })[0];

/** Rows of `data` picked by integer `indices` along `axis` (embedding lookups). */
const GATHER = defineOp('Gather', ([data, indices], attrs) => {
  const axis = normalizeAxis(attrValue(attrs, 'axis', 0), data!.rank);
  check(axis !== undefined, 'axis out of range');
  check(indices!.dtype === 'int64' || indices!.dtype === 'int32', `indices must be integers, got ${indices!.dtype}`);
  return [{ dtype: data!.dtype, shape: [...data!.shape.slice(0, axis), ...indices!.shape, ...data!.shape.slice(axis + 1)] }];
});
export const gather = (data: Tensor, indices: Tensor, axis = 0): Tensor =>
  data.graph.apply(GATHER, [data, indices], { axis: attr.int(axis) })[0];
// Scatter-add of the gradient into zeros, so repeated indices (a token used twice) accumulate:
// viewed as [before axis, indices, after axis], the gradient lands in data viewed as [before, axis, after].
GATHER.grad = ({ inputs: [data, indices], attrs }, [dy]) => {
  const axis = normalizeAxis(attrValue(attrs, 'axis', 0), data!.rank)!;
  const before = sizeOf(data!.shape.slice(0, axis));
  const after = sizeOf(data!.shape.slice(axis + 1));
  const count = sizeOf(indices!.shape);
  const positions = expand(reshape(indices!, [1, count, 1]), [before, count, after]);
  const scattered = scatterAdd(zeros(data!, [before, data!.shape[axis], after]), positions, reshape(dy!, [before, count, after]), 1);
  return [reshape(scattered, data!.shape)];
};

/** Nearest-neighbour upsampling by integer factors, as torch's F.interpolate(mode="nearest"). */
const RESIZE = defineOp('Resize', ([x, roi, scalesT], attrs) => {
  check(!roi, 'roi is not supported');
  check(attrValue<string>(attrs, 'mode', '') === 'nearest', 'only nearest mode is supported');
  const scales = scalesT && x!.graph.constants.get(scalesT);
  check(scales && scales.data instanceof Float32Array, 'scales must be a float32 constant');
  const factors = Array.from(scales.data as Float32Array);
  check(factors.length === x!.rank && factors.every(Number.isInteger), 'scales must be integers, one per axis');
  return [{ dtype: x!.dtype, shape: x!.shape.map((d, i) => d * factors[i]) }];
});
export const upsampleNearest = (x: Tensor, factors: number[]): Tensor =>
  x.graph.apply(RESIZE, [x, undefined, x.graph.constant('float32', [factors.length], Float32Array.from(factors))], {
    mode: attr.string('nearest'),
    coordinate_transformation_mode: attr.string('asymmetric'),
    nearest_mode: attr.string('floor'),
  })[0];
// Each input element fed a block of factors[i] outputs per axis: sum over those blocks.
RESIZE.grad = ({ inputs: [x] }, [dy]) => {
  const factors = dy!.shape.map((d, i) => d / x!.shape[i]);
  const blocks = x!.shape.flatMap((d, i) => [d, factors[i]]);
  const axes = factors.flatMap((f, i) => (f > 1 ? [2 * i + 1] : []));
  if (!axes.length) return [dy!];
  return [reshape(reduceSum(reshape(dy!, blocks), axes, false), x!.shape)];
};
