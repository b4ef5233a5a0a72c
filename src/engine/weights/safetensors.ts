import { readFile, writeFile } from 'node:fs/promises';
import { sizeOf } from '../graph/shape';
import { bfloat16ArrayToFloat32, float16ArrayToFloat32, float32ArrayToBFloat16, float32ArrayToFloat16 } from './dtype';

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

/** A file that is not valid safetensors, or a tensor whose type or size does not fit the call. */
export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
}

/** The byte count `shape` of `dtype` needs must be the one stored. */
function checkTensorBytes(name: string, dtype: SafetensorsDType, shape: number[], byteLength: number): void {
  if (!(dtype in BYTES_PER_ELEMENT)) throw new SafetensorsError(`safetensors: tensor ${name} has unsupported dtype ${dtype}`);
  const expected = sizeOf(shape) * BYTES_PER_ELEMENT[dtype];
  if (byteLength !== expected) throw new SafetensorsError(`safetensors: tensor ${name} holds ${byteLength} bytes, its shape needs ${expected}`);
}

/** A tensor as the header describes it: type, shape, and byte range in the data after the header. */
export interface TensorHeader {
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

/** The JSON header's byte length, from a file's first 8 bytes (little-endian); the data starts after it. */
export function safetensorsHeaderLength(prefix: Uint8Array): number {
  if (prefix.byteLength < 8) throw new SafetensorsError(`safetensors: ${prefix.byteLength} bytes, too short for a header`);
  return Number(new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true));
}

/**
 * The tensors a JSON header `{name: {dtype, shape, data_offsets}}` describes, each with a supported
 * type, as many bytes as its shape needs, and inside the file. `json` is what the file holds of the
 * `headerLength` bytes after its length prefix, `fileSize` the whole file's size: enough to check a
 * checkpoint without reading its data.
 */
export function parseSafetensorsHeader(json: Uint8Array, headerLength: number, fileSize: number): Map<string, TensorHeader> {
  if (json.byteLength < headerLength) throw new SafetensorsError('safetensors: header runs past the end of the file');
  let header: Record<string, { dtype: SafetensorsDType; shape: number[]; data_offsets: [number, number] } | Record<string, string>>;
  try {
    header = JSON.parse(new TextDecoder().decode(json.subarray(0, headerLength)));
  } catch (error) {
    throw new SafetensorsError(`safetensors: the header is not JSON (${(error as Error).message})`);
  }
  const tensors = new Map<string, TensorHeader>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: offsets } = entry as { dtype: SafetensorsDType; shape: number[]; data_offsets: [number, number] };
    if (!Array.isArray(shape) || !Array.isArray(offsets) || offsets.length !== 2) {
      throw new SafetensorsError(`safetensors: tensor ${name} has no shape and data_offsets`);
    }
    const [begin, end] = offsets;
    checkTensorBytes(name, dtype, shape, end - begin);
    if (8 + headerLength + end > fileSize) throw new SafetensorsError(`safetensors: tensor ${name} runs past the end of the file`);
    tensors.set(name, { dtype, shape, begin, end });
  }
  return tensors;
}

/**
 * A file's tensors as its header describes them, from two ranged reads (the length prefix, then the
 * JSON header): `readRange(start, end)` gives bytes [start, end) and the file's size. No data is read.
 */
export async function readSafetensorsHeader(
  readRange: (start: number, end: number) => Promise<{ bytes: Uint8Array; size: number }>,
): Promise<Map<string, TensorHeader>> {
  const headerLength = safetensorsHeaderLength((await readRange(0, 8)).bytes);
  const { bytes, size } = await readRange(8, 8 + headerLength);
  return parseSafetensorsHeader(bytes, headerLength, size);
}

/**
 * Parses a safetensors buffer: an 8-byte little-endian header length, a JSON header
 * `{name: {dtype, shape, data_offsets}}`, then the tensor bytes.
 */
export function parseSafetensors(buffer: Uint8Array): Map<string, StoredTensor> {
  const headerLength = safetensorsHeaderLength(buffer);
  const dataStart = 8 + headerLength;
  const tensors = new Map<string, StoredTensor>();
  for (const [name, { dtype, shape, begin, end }] of parseSafetensorsHeader(buffer.subarray(8, dataStart), headerLength, buffer.byteLength)) {
    tensors.set(name, { dtype, shape, bytes: buffer.subarray(dataStart + begin, dataStart + end) });
  }
  return tensors;
}

/** The header's `__metadata__` string map ({} when it has none). */
export function safetensorsMetadata(buffer: Uint8Array): Record<string, string> {
  const headerLength = safetensorsHeaderLength(buffer);
  if (buffer.byteLength < 8 + headerLength) throw new SafetensorsError('safetensors: header runs past the end of the file');
  try {
    return JSON.parse(new TextDecoder().decode(buffer.subarray(8, 8 + headerLength))).__metadata__ ?? {};
  } catch (error) {
    throw new SafetensorsError(`safetensors: the header is not JSON (${(error as Error).message})`);
  }
}

export async function readSafetensors(path: string): Promise<Map<string, StoredTensor>> {
  return parseSafetensors(await readFile(path));
}

/** A typed view on tensor bytes, copied first when their offset is not a multiple of the element size. */
function view<T>(bytes: Uint8Array, Type: { new (buffer: ArrayBufferLike, offset: number, length: number): T; BYTES_PER_ELEMENT: number }): T {
  const aligned = bytes.byteOffset % Type.BYTES_PER_ELEMENT === 0 ? bytes : new Uint8Array(bytes); // a copy, even of a Buffer
  return new Type(aligned.buffer, aligned.byteOffset, aligned.byteLength / Type.BYTES_PER_ELEMENT);
}

/**
 * Widens any floating-point tensor to a new float32 array (F16 and BF16 exactly, F64 by rounding).
 * Safetensors is little-endian, as are the machines the engine runs on, so bytes are read in place.
 */
export function toFloat32(tensor: StoredTensor): Float32Array {
  const { dtype, bytes } = tensor;
  switch (dtype) {
    case 'F32':
      return view(bytes, Float32Array).slice();
    case 'F64':
      return Float32Array.from(view(bytes, Float64Array));
    case 'F16':
      return float16ArrayToFloat32(view(bytes, Uint16Array));
    case 'BF16':
      return bfloat16ArrayToFloat32(view(bytes, Uint16Array));
    default:
      throw new SafetensorsError(`safetensors: ${dtype} is not a floating-point type`);
  }
}

/** Stores float32 values as F32, or narrowed to F16 / BF16 (round to nearest, ties to even). */
export function fromFloat32(values: Float32Array, shape: number[], dtype: 'F32' | 'F16' | 'BF16' = 'F32'): StoredTensor {
  const count = sizeOf(shape);
  if (count !== values.length) throw new SafetensorsError(`safetensors: shape [${shape}] holds ${count} values, got ${values.length}`);
  const stored =
    dtype === 'F32' ? values.slice() : dtype === 'F16' ? float32ArrayToFloat16(values) : float32ArrayToBFloat16(values);
  return { dtype, shape: [...shape], bytes: new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength) };
}

/**
 * Serializes tensors in the safetensors layout, in the map's order. The header is padded with
 * spaces to a multiple of 8 bytes, as the reference writer does, so data starts aligned.
 */
export function serializeSafetensors(tensors: Map<string, StoredTensor>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, { dtype, shape, bytes }] of tensors) {
    checkTensorBytes(name, dtype, shape, bytes.byteLength);
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
  }
  const text = JSON.stringify(header);
  const unpadded = new TextEncoder().encode(text).byteLength;
  const json = new TextEncoder().encode(text + ' '.repeat((8 - (unpadded % 8)) % 8));
  const out = new Uint8Array(8 + json.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let position = 8 + json.byteLength;
  for (const { bytes } of tensors.values()) {
    out.set(bytes, position);
    position += bytes.byteLength;
  }
  return out;
}

export async function writeSafetensors(path: string, tensors: Map<string, StoredTensor>, metadata?: Record<string, string>): Promise<void> {
  await writeFile(path, serializeSafetensors(tensors, metadata));
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
    else throw new SafetensorsError(`safetensors: ${dtype} is not an integer type`);
  }
  return out;
}
