import { check, type Graph, type Tensor } from '../graph';

/** A 1-D int64 constant, the form ONNX takes shapes, axes and slice bounds in. */
export function int64s(graph: Graph, values: readonly number[]): Tensor {
  return graph.constant('int64', [values.length], BigInt64Array.from(values, (v) => BigInt(v)));
}

/** The values of an int64 constant, needed by shape inference of Reshape, Slice, Expand... */
export function constantInts(tensor: Tensor | undefined, what: string): number[] {
  const data = tensor && tensor.graph.constants.get(tensor);
  check(data && data.data instanceof BigInt64Array, `${what} must be an int64 constant`);
  return Array.from(data.data as BigInt64Array, Number);
}
