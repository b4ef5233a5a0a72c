import { attr, attrValue, check, defineOp, type Tensor } from '../graph';
import { normalizeAxis } from '../shape';
import { constantInts, int64s } from './constants';

function reduction(type: string) {
  return defineOp(type, ([x, axesT], attrs) => {
    const axes = axesT ? constantInts(axesT, 'axes').map((a) => normalizeAxis(a, x!.rank)) : [...x!.shape.keys()];
    check(axes.every((a) => a !== undefined), 'axis out of range');
    const keep = attrValue(attrs, 'keepdims', 1) === 1;
    const shape = keep ? x!.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x!.shape.filter((_, i) => !axes.includes(i));
    return [{ dtype: x!.dtype, shape }];
  });
}

export const REDUCE_MEAN = reduction('ReduceMean');
export const REDUCE_SUM = reduction('ReduceSum');
export const REDUCE_MAX = reduction('ReduceMax');

const reduce = (op: typeof REDUCE_SUM) => (x: Tensor, axes: number[], keepdims = true): Tensor =>
  x.graph.apply(op, [x, int64s(x.graph, axes)], { keepdims: attr.int(keepdims ? 1 : 0) })[0];

export const reduceMean = reduce(REDUCE_MEAN);
export const reduceSum = reduce(REDUCE_SUM);
export const reduceMax = reduce(REDUCE_MAX);

export const SOFTMAX = defineOp('Softmax', ([x], attrs) => {
  check(normalizeAxis(attrValue(attrs, 'axis', -1), x!.rank) !== undefined, 'axis out of range');
  return [{ dtype: x!.dtype, shape: x!.shape }];
});
export const softmax = (x: Tensor, axis = -1): Tensor => x.graph.apply(SOFTMAX, [x], { axis: attr.int(axis) })[0];
