import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bindWeights, WeightBindingError } from '../../src/engine/weights/bind';
import {
  bfloat16BitsToFloat32,
  float16BitsToFloat32,
  float32ToBFloat16Bits,
  float32ToFloat16Bits,
} from '../../src/engine/weights/dtype';
import {
  fromFloat32,
  parseSafetensors,
  readSafetensors,
  SafetensorsError,
  serializeSafetensors,
  toFloat32,
  toIntegers,
  writeSafetensors,
  type StoredTensor,
} from '../../src/engine/weights/safetensors';

/** The float32 values next to `value`, one unit in the last place smaller and larger in magnitude. */
function neighbours(value: number): [number, number] {
  const f = new Float32Array([value]);
  const bits = new Uint32Array(f.buffer);
  const b = bits[0];
  bits[0] = b - 1;
  const below = f[0];
  bits[0] = b + 1;
  return [below, f[0]];
}

describe('float16 conversion', () => {
  it('round-trips every binary16 value exactly', () => {
    for (let h = 0; h < 0x10000; h++) {
      const value = float16BitsToFloat32(h);
      if (Number.isNaN(value)) expect(Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(value)))).toBe(true);
      else expect(float32ToFloat16Bits(value)).toBe(h);
    }
  });

  it('rounds to nearest with ties to even between every pair of neighbouring halves', () => {
    for (const sign of [0, 0x8000]) {
      for (let h = 0; h < 0x7bff; h++) {
        const low = float16BitsToFloat32(sign | h);
        const high = float16BitsToFloat32(sign | (h + 1));
        const tie = (low + high) / 2; // exact in float32: halves carry 11 significant bits
        const even = h % 2 === 0 ? h : h + 1;
        const [towardLow, towardHigh] = neighbours(tie);
        if (float32ToFloat16Bits(tie) !== (sign | even)) expect.fail(`tie ${tie} rounded to ${float32ToFloat16Bits(tie)}`);
        if (float32ToFloat16Bits(towardLow) !== (sign | h)) expect.fail(`${towardLow} should round to ${low}`);
        if (float32ToFloat16Bits(towardHigh) !== (sign | (h + 1))) expect.fail(`${towardHigh} should round to ${high}`);
      }
    }
  });

  it('overflows to infinity past the largest half and underflows to zero below the smallest', () => {
    const largest = float16BitsToFloat32(0x7bff); // 65504
    const ulp = largest - float16BitsToFloat32(0x7bfe);
    expect(float32ToFloat16Bits(largest + ulp / 2)).toBe(0x7c00); // the tie rounds to the "even" infinity
    expect(float32ToFloat16Bits(neighbours(largest + ulp / 2)[0])).toBe(0x7bff);
    expect(float32ToFloat16Bits(-1e6)).toBe(0xfc00);
    const smallest = float16BitsToFloat32(0x0001); // 2^-24
    expect(float32ToFloat16Bits(smallest / 2)).toBe(0); // tie with zero, which is even
    expect(float32ToFloat16Bits(neighbours(smallest / 2)[1])).toBe(0x0001);
    expect(float32ToFloat16Bits(-1e-10)).toBe(0x8000);
    expect(float16BitsToFloat32(float32ToFloat16Bits(Infinity))).toBe(Infinity);
  });
});

describe('bfloat16 conversion', () => {
  it('round-trips every bfloat16 value exactly', () => {
    for (let h = 0; h < 0x10000; h++) {
      const value = bfloat16BitsToFloat32(h);
      if (Number.isNaN(value)) expect(Number.isNaN(bfloat16BitsToFloat32(float32ToBFloat16Bits(value)))).toBe(true);
      else expect(float32ToBFloat16Bits(value)).toBe(h);
    }
  });

  it('rounds to nearest with ties to even between every pair of neighbouring values', () => {
    const f = new Float32Array(1);
    const bits = new Uint32Array(f.buffer);
    for (let h = 0; h < 0x7f7f; h++) {
      for (const sign of [0, 0x8000]) {
        const top = (sign | h) << 16;
        const even = h % 2 === 0 ? h : h + 1;
        const cases: [number, number][] = [[0x8000, even], [0x7fff, h], [0x8001, h + 1]];
        for (const [low, expected] of cases) {
          bits[0] = top | low;
          if (float32ToBFloat16Bits(f[0]) !== (sign | expected)) expect.fail(`${f[0]} rounded to ${float32ToBFloat16Bits(f[0])}`);
        }
      }
    }
  });
});

describe('safetensors', () => {
  const values = Float32Array.from({ length: 12 }, (_, i) => (i - 5.5) / 3);

  function sample(): Map<string, StoredTensor> {
    const ids = new BigInt64Array([3n, -1n, 49407n]);
    return new Map<string, StoredTensor>([
      ['odd.f16', fromFloat32(values.subarray(0, 3), [3], 'F16')], // 6 bytes: the next tensor starts unaligned
      ['weight.f32', fromFloat32(values, [3, 4])],
      ['weight.bf16', fromFloat32(values, [2, 6], 'BF16')],
      ['input_ids', { dtype: 'I64', shape: [3], bytes: new Uint8Array(ids.buffer) }],
      ['naïve.名前', fromFloat32(values.subarray(0, 2), [2])],
    ]);
  }

  it('serializes tensors that parse back to the same dtypes, shapes and bytes', () => {
    const tensors = sample();
    const buffer = serializeSafetensors(tensors, { format: 'pt' });
    const headerLength = Number(new DataView(buffer.buffer).getBigUint64(0, true));
    expect(headerLength % 8).toBe(0);
    const header = JSON.parse(new TextDecoder().decode(buffer.subarray(8, 8 + headerLength)));
    expect(header.__metadata__).toEqual({ format: 'pt' });

    const parsed = parseSafetensors(buffer);
    expect([...parsed.keys()]).toEqual([...tensors.keys()]);
    for (const [name, tensor] of tensors) {
      const back = parsed.get(name)!;
      expect(back.dtype).toBe(tensor.dtype);
      expect(back.shape).toEqual(tensor.shape);
      expect([...back.bytes]).toEqual([...tensor.bytes]);
    }
    expect(toFloat32(parsed.get('weight.f32')!)).toEqual(values);
    expect(toIntegers(parsed.get('input_ids')!)).toEqual([3, -1, 49407]);
  });

  it('widens F16 and BF16 to the float32 nearest the originals, from unaligned bytes too', () => {
    const parsed = parseSafetensors(serializeSafetensors(sample()));
    const f16 = toFloat32(parsed.get('odd.f16')!);
    const bf16 = toFloat32(parsed.get('weight.bf16')!);
    for (let i = 0; i < 3; i++) expect(f16[i]).toBe(float16BitsToFloat32(float32ToFloat16Bits(values[i])));
    for (let i = 0; i < values.length; i++) {
      expect(bf16[i]).toBe(bfloat16BitsToFloat32(float32ToBFloat16Bits(values[i])));
      expect(Math.abs(bf16[i] - values[i])).toBeLessThanOrEqual(Math.abs(values[i]) * 2 ** -8);
    }
  });

  it('writes a file readSafetensors reads back', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'safetensors-'));
    try {
      await writeSafetensors(join(dir, 'w.safetensors'), sample());
      const back = await readSafetensors(join(dir, 'w.safetensors'));
      expect(toFloat32(back.get('weight.f32')!)).toEqual(values);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses a tensor whose bytes do not fill its shape', () => {
    expect(() => fromFloat32(values, [5, 5])).toThrow(/shape \[5,5\] holds 25 values, got 12/);
    const bad = new Map([['w', { dtype: 'F32', shape: [4], bytes: new Uint8Array(8) } as StoredTensor]]);
    expect(() => serializeSafetensors(bad)).toThrow(/tensor w holds 8 bytes, its shape needs 16/);
  });

  it('refuses a file that is not safetensors, or cut short, with a SafetensorsError', () => {
    const whole = serializeSafetensors(sample());
    const refusals: [Uint8Array, RegExp][] = [
      [whole.subarray(0, 5), /5 bytes, too short for a header/],
      [whole.subarray(0, 40), /header runs past the end of the file/],
      [whole.subarray(0, whole.byteLength - 1), /tensor naïve.名前 runs past the end of the file/],
      [Uint8Array.from([...new Uint8Array(new BigUint64Array([8n]).buffer), ...new TextEncoder().encode('not json')]), /header is not JSON/],
    ];
    for (const [bytes, message] of refusals) {
      expect(() => parseSafetensors(bytes)).toThrow(SafetensorsError);
      expect(() => parseSafetensors(bytes)).toThrow(message);
    }
  });
});

describe('bindWeights', () => {
  const a = Float32Array.from([1, -2, 3.5, 0.25, 1 / 3, 7]);
  const stored = new Map<string, StoredTensor>([
    ['a.weight', fromFloat32(a, [2, 3], 'F16')],
    ['a.bias', fromFloat32(a.subarray(0, 2), [2], 'BF16')],
    ['b.weight', fromFloat32(a.subarray(0, 4), [4])],
  ]);
  const expected = new Map<string, number[]>([
    ['a.weight', [2, 3]],
    ['a.bias', [2]],
    ['b.weight', [4]],
  ]);

  it('binds every expected tensor, widened to float32', () => {
    const bound = bindWeights(expected, stored);
    expect([...bound.keys()]).toEqual([...expected.keys()]);
    expect(bound.get('b.weight')).toEqual(a.subarray(0, 4));
    expect(bound.get('a.weight')![2]).toBe(3.5);
    expect(bound.get('a.weight')![4]).toBe(float16BitsToFloat32(float32ToFloat16Bits(1 / 3)));
    expect(bound.get('a.bias')).toEqual(Float32Array.from([1, -2]));
  });

  function problemsOf(expectedShapes: Map<string, number[]>, tensors = stored): string[] {
    try {
      bindWeights(expectedShapes, tensors);
    } catch (error) {
      expect(error).toBeInstanceOf(WeightBindingError);
      return (error as WeightBindingError).problems;
    }
    return expect.fail('bindWeights accepted weights that do not fit');
  }

  it('names a missing, an unexpected and a mis-shaped tensor', () => {
    const withExtra = new Map(expected).set('c.weight', [1]);
    expect(problemsOf(withExtra)).toEqual(['missing c.weight']);
    const withoutOne = new Map(expected);
    withoutOne.delete('b.weight');
    expect(problemsOf(withoutOne)).toEqual(['unexpected b.weight']);
    const reshaped = new Map(expected).set('a.weight', [3, 2]);
    expect(problemsOf(reshaped)).toEqual(['a.weight has shape [2,3] but the model expects [3,2]']);
  });

  it('refuses integer tensors and lists every problem in one message', () => {
    const ids = new Map(stored).set('ids', { dtype: 'I64', shape: [1], bytes: new Uint8Array(8) });
    const shapes = new Map(expected).set('ids', [1]).set('gone', [2]);
    shapes.delete('a.bias');
    expect(problemsOf(shapes, ids)).toEqual(['ids is stored as I64, not a floating-point type', 'missing gone', 'unexpected a.bias']);
    expect(() => bindWeights(shapes, ids)).toThrow(/weights do not fit the model: ids is stored as I64.*; missing gone; unexpected a.bias/);
  });
});
