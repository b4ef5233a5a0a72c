import { attr, attrValue, check, defineOp, type Node, type Tensor } from '../graph';
import { normalizeAxis, sameShape, type Shape, sizeOf } from '../shape';
import { constantInts, int64s } from './constants';
import { cast, div, equal, mul, sub } from './elementwise';
import { expand, reshape } from './shape-ops';

/** The axes a reduction sums over: ONNX reduces every axis when the axes input is absent or empty. */
function reductionAxes(x: Tensor, axesT: Tensor | undefined): (number | undefined)[] {
  const given = axesT ? constantInts(axesT, 'axes') : [];
  return given.length ? given.map((a) => normalizeAxis(a, x.rank)) : [...x.shape.keys()];
}

function reduction(type: string) {
  return defineOp(type, ([x, axesT], attrs) => {
    const axes = reductionAxes(x!, axesT);
    check(axes.every((a) => a !== undefined), 'axis out of range');
    const keep = attrValue(attrs, 'keepdims', 1) === 1;
    const shape = keep ? x!.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x!.shape.filter((_, i) => !axes.includes(i));
    return [{ dtype: x!.dtype, shape }];
  });
}

const REDUCE_MEAN = reduction('ReduceMean');
const REDUCE_SUM = reduction('ReduceSum');
const REDUCE_MAX = reduction('ReduceMax');

const reduce = (op: typeof REDUCE_SUM) => (x: Tensor, axes: number[], keepdims = true): Tensor =>
  x.graph.apply(op, [x, int64s(x.graph, axes)], { keepdims: attr.int(keepdims ? 1 : 0) })[0];

export const reduceMean = reduce(REDUCE_MEAN);
export const reduceSum = reduce(REDUCE_SUM);
export const reduceMax = reduce(REDUCE_MAX);

/** Sums a broadcast result's gradient back to the operand's `shape`: undoes numpy broadcasting. */
export function unbroadcast(grad: Tensor, shape: Shape): Tensor {
  if (sameShape(grad.shape, shape)) return grad;
  const lead = grad.rank - shape.length;
  const axes = grad.shape.flatMap((d, i) => (i < lead || (shape[i - lead] === 1 && d !== 1) ? [i] : []));
  const summed = axes.length ? reduceSum(grad, axes) : grad;
  return sameShape(summed.shape, shape) ? summed : reshape(summed, shape);
}

/** The reduced axes of a reduction node, and its output's shape with those axes kept as 1. */
function reducedAxes({ inputs: [x, axesT] }: Node): { axes: number[]; kept: number[] } {
  const axes = reductionAxes(x!, axesT) as number[];
  return { axes, kept: x!.shape.map((d, i) => (axes.includes(i) ? 1 : d)) };
}

REDUCE_SUM.grad = (node, [dy]) => [expand(reshape(dy!, reducedAxes(node).kept), node.inputs[0]!.shape)];
REDUCE_MEAN.grad = (node, [dy]) => {
  const x = node.inputs[0]!;
  const { kept } = reducedAxes(node);
  return [div(expand(reshape(dy!, kept), x.shape), sizeOf(x.shape) / sizeOf(kept))];
};
// As torch.amax: the gradient is shared evenly between tied maxima.
REDUCE_MAX.grad = (node, [dy]) => {
  const x = node.inputs[0]!;
  const { axes, kept } = reducedAxes(node);
  const mask = cast(equal(x, reshape(node.outputs[0], kept)), x.dtype);
  return [mul(mask, div(reshape(dy!, kept), reduceSum(mask, axes)))];
};

const SOFTMAX = defineOp('Softmax', ([x], attrs) => {
  check(normalizeAxis(attrValue(attrs, 'axis', -1), x!.rank) !== undefined, 'axis out of range');
  return [{ dtype: x!.dtype, shape: x!.shape }];
});
export const softmax = (x: Tensor, axis = -1): Tensor => x.graph.apply(SOFTMAX, [x], { axis: attr.int(axis) })[0];
// dx = y * (dy - sum(dy * y)) along the axis, torch's _softmax_backward_data.
SOFTMAX.grad = ({ attrs, outputs: [y] }, [dy]) => {
  const axis = attrValue(attrs, 'axis', -1);
  return [mul(y, sub(dy!, reduceSum(mul(dy!, y), [axis])))];
};
