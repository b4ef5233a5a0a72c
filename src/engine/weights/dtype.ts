// Conversions between float32 and the 16-bit float formats checkpoints ship in. Narrowing rounds to
// nearest, ties to even, as torch's `.half()` / `.bfloat16()` do; widening is exact.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function bitsOf(value: number): number {
  f32[0] = value;
  return u32[0];
}

/** Shifts `value` right by `shift` bits, rounding the dropped bits to nearest, ties to even. */
function shiftRoundEven(value: number, shift: number): number {
  const kept = value >>> shift;
  const dropped = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return dropped > half || (dropped === half && kept & 1) ? kept + 1 : kept;
}

/** The IEEE binary16 bits nearest to a float32 value. */
export function float32ToFloat16Bits(value: number): number {
  return float16BitsOfFloat32Bits(bitsOf(value));
}

/** float32ToFloat16Bits on the float32's bits: integer work only, for whole arrays. */
function float16BitsOfFloat32Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0); // NaN stays a (quiet) NaN
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 31) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // Subnormal half: the value is m * 2^-24 with the implicit leading one made explicit.
    const shift = 14 - halfExponent;
    return shift > 24 ? sign : sign | shiftRoundEven(mantissa | 0x800000, shift);
  }
  // A carry out of the mantissa moves into the exponent, and from the largest finite value to infinity.
  return sign | shiftRoundEven((halfExponent << 23) | mantissa, 13);
}

/** The bfloat16 bits nearest to a float32 value: its top half, rounded. */
export function float32ToBFloat16Bits(value: number): number {
  const bits = bitsOf(value);
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40; // NaN stays a (quiet) NaN
  return shiftRoundEven(bits, 16);
}

export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

export function bfloat16BitsToFloat32(bits: number): number {
  u32[0] = bits << 16;
  return f32[0];
}

let float16Table: Float32Array | undefined;

/** Widens binary16 bits through a 65,536-entry table: checkpoints hold hundreds of millions of them. */
export function float16ArrayToFloat32(bits: Uint16Array): Float32Array {
  float16Table ??= Float32Array.from({ length: 0x10000 }, (_, h) => float16BitsToFloat32(h));
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = float16Table[bits[i]];
  return out;
}

export function bfloat16ArrayToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i] << 16;
  return out;
}

/** Narrows a whole array (a float16 model's weights, hundreds of millions of values) through the bits, a loop V8 inlines. */
export function float32ArrayToFloat16(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < bits.length; i++) out[i] = float16BitsOfFloat32Bits(bits[i]);
  return out;
}

export function float32ArrayToBFloat16(values: Float32Array): Uint16Array {
  return Uint16Array.from(values, float32ToBFloat16Bits);
}
