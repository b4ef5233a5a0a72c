import { sizeOf } from '../graph/shape';
import { EngineRuntimeError } from './errors';

/**
 * Element types a session exchanges with JavaScript. float16 travels as its bits on every Node (only Node 24 on
 * has a Float16Array); session-worker.js turns onnxruntime's Float16Array outputs back into bits.
 */
export interface TensorArrays {
  float32: Float32Array;
  float16: Uint16Array;
  float64: Float64Array;
  int64: BigInt64Array;
  int32: Int32Array;
  bool: Uint8Array;
}
export type TensorDType = keyof TensorArrays;

/** A tensor crossing the worker boundary: plain data, so it survives structured cloning. */
export type TensorData = {
  [D in TensorDType]: { dtype: D; dims: number[]; data: TensorArrays[D] };
}[TensorDType];

const ARRAY_TYPES: Record<TensorDType, Function> = {
  float32: Float32Array,
  float16: Uint16Array,
  float64: Float64Array,
  int64: BigInt64Array,
  int32: Int32Array,
  bool: Uint8Array,
};

/** Throws a typed error naming the tensor when dtype, array type and dims disagree. */
export function checkTensor(name: string, tensor: TensorData): void {
  const fail = (why: string) => {
    throw new EngineRuntimeError('INVALID_TENSOR', `tensor ${name}: ${why}`);
  };
  const arrayType = ARRAY_TYPES[tensor?.dtype];
  if (!arrayType) fail(`unsupported dtype ${tensor?.dtype}; expected one of ${Object.keys(ARRAY_TYPES).join(', ')}`);
  if (!(tensor.data instanceof arrayType)) fail(`${tensor.dtype} data must be a ${arrayType.name}`);
  if (!Array.isArray(tensor.dims) || !tensor.dims.every((d) => Number.isInteger(d) && d >= 0)) {
    fail(`dims must be non-negative integers; got [${tensor.dims}]`);
  }
  const count = sizeOf(tensor.dims);
  if (count !== tensor.data.length) fail(`dims [${tensor.dims}] hold ${count} elements but data has ${tensor.data.length}`);
}

/**
 * The buffers that can move to the other thread instead of being copied: those a tensor's
 * data covers whole (transferring a buffer shared with other views would empty them too).
 */
export function transferables(tensors: Iterable<TensorData>): ArrayBuffer[] {
  const buffers = new Set<ArrayBuffer>();
  for (const { data } of tensors) {
    const buffer = data.buffer;
    if (buffer instanceof ArrayBuffer && data.byteOffset === 0 && data.byteLength === buffer.byteLength) {
      buffers.add(buffer);
    }
  }
  return [...buffers];
}
