import { readFile } from 'node:fs/promises';

/** Element types of the safetensors format that the engine reads. */
export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'U8' | 'BOOL';

/** One tensor as stored: raw little-endian bytes, its element type and shape. */
export interface StoredTensor {
  dtype: SafetensorsDType;
  shape: number[];
  bytes: Uint8Array;
}

const BYTES_PER_ELEMENT: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, U8: 1, BOOL: 1,
};

/**
 * Parses a safetensors buffer: an 8-byte little-endian header length, a JSON header
 * `{name: {dtype, shape, data_offsets}}`, then the tensor bytes.
 */
export function parseSafetensors(buffer: Uint8Array): Map<string, StoredTensor> {
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (8 + headerLength > buffer.byteLength) throw new Error('safetensors: header runs past the end of the file');
  const header = JSON.parse(new TextDecoder().decode(buffer.subarray(8, 8 + headerLength))) as Record<
    string,
    { dtype: SafetensorsDType; shape: number[]; data_offsets: [number, number] } | Record<string, string>
  >;
  const dataStart = 8 + headerLength;
  const tensors = new Map<string, StoredTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: [begin, end] } = entry as { dtype: SafetensorsDType; shape: number[]; data_offsets: [number, number] };
    if (!(dtype in BYTES_PER_ELEMENT)) throw new Error(`safetensors: tensor ${name} has unsupported dtype ${dtype}`);
    const expected = shape.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[dtype];
    if (end - begin !== expected) throw new Error(`safetensors: tensor ${name} holds ${end - begin} bytes, its shape needs ${expected}`);
    tensors.set(name, { dtype, shape, bytes: buffer.subarray(dataStart + begin, dataStart + end) });
  }
  return tensors;
}

export async function readSafetensors(path: string): Promise<Map<string, StoredTensor>> {
  return parseSafetensors(await readFile(path));
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

/** Widens any floating-point tensor to float32 (F16 and BF16 exactly, F64 by rounding). */
export function toFloat32(tensor: StoredTensor): Float32Array {
  const { dtype, bytes } = tensor;
  const count = bytes.byteLength / BYTES_PER_ELEMENT[dtype];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    case 'F16':
      for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(i * 2, true));
      return out;
    case 'BF16': {
      const widened = new DataView(new ArrayBuffer(4));
      for (let i = 0; i < count; i++) {
        widened.setUint32(0, view.getUint16(i * 2, true) << 16, false);
        out[i] = widened.getFloat32(0, false);
      }
      return out;
    }
    default:
      throw new Error(`safetensors: ${dtype} is not a floating-point type`);
  }
}

/** Reads an integer tensor (I64 or I32) as JavaScript numbers. */
export function toIntegers(tensor: StoredTensor): number[] {
  const { dtype, bytes } = tensor;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = bytes.byteLength / BYTES_PER_ELEMENT[dtype];
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    if (dtype === 'I64') out.push(Number(view.getBigInt64(i * 8, true)));
    else if (dtype === 'I32') out.push(view.getInt32(i * 4, true));
    else throw new Error(`safetensors: ${dtype} is not an integer type`);
  }
  return out;
}
