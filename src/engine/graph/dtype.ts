/** Element types the engine builds graphs with, and their ONNX TensorProto codes. */
export type DType = 'float32' | 'float16' | 'float64' | 'int64' | 'int32' | 'bool' | 'uint8';

export const ONNX_DTYPE: Record<DType, number> = {
  float32: 1, uint8: 2, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11,
};

export const BYTES_PER_ELEMENT: Record<DType, number> = {
  float32: 4, float16: 2, float64: 8, int64: 8, int32: 4, bool: 1, uint8: 1,
};

export function isFloat(dtype: DType): boolean {
  return dtype === 'float32' || dtype === 'float16' || dtype === 'float64';
}

/** Typed arrays holding tensor data in memory (float16 is stored as raw Uint16 bits). */
export type TensorArray = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array;

/** Little-endian bytes of a typed array or of plain numbers converted to `dtype`. */
export function toBytes(dtype: DType, values: TensorArray | readonly number[]): Uint8Array {
  if (!Array.isArray(values)) {
    const array = values as TensorArray;
    return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  }
  const numbers = values as readonly number[];
  switch (dtype) {
    case 'float32': return toBytes(dtype, Float32Array.from(numbers));
    case 'float64': return toBytes(dtype, Float64Array.from(numbers));
    case 'int64': return toBytes(dtype, BigInt64Array.from(numbers, (v) => BigInt(v)));
    case 'int32': return toBytes(dtype, Int32Array.from(numbers));
    case 'bool':
    case 'uint8': return Uint8Array.from(numbers);
    case 'float16': throw new Error('float16 constants must be given as Uint16Array bits');
  }
}
