import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import {
  add, concat, conv, Graph, groupNorm, linear, matmul, reduceMean, reshape, saveWithExternalData, serialize, slice,
  softmax, split, transpose, upsampleNearest,
} from '../../src/engine/graph';
import { runModel } from '../helpers/models';
import { uniform } from '../helpers/random';

describe('graph builder', () => {
  it('infers static shapes and names the operator and shapes in errors', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2, 3, 8, 8]);
    const w = g.weight('w', [5, 3, 3, 3]);
    const y = conv(x, w, undefined, { strides: [2, 2], pads: [1, 1, 1, 1] });
    expect(y.shape).toEqual([2, 5, 4, 4]);
    expect(upsampleNearest(y, [1, 1, 2, 2]).shape).toEqual([2, 5, 8, 8]);
    expect(reshape(y, [2, -1]).shape).toEqual([2, 80]);
    expect(split(y, [2, 3], 1).map((t) => t.shape[1])).toEqual([2, 3]);
    expect(slice(y, [1], [100], [3]).shape).toEqual([2, 5, 4, 3]);
    expect(() => matmul(g.input('a', 'float32', [2, 3]), g.input('b', 'float32', [4, 5]))).toThrow(
      /MatMul\(float32\[2, 3\], float32\[4, 5\]\): inner dimensions differ/,
    );
    expect(() => add(x, g.input('c', 'float32', [7]))).toThrow(/Add.*do not broadcast/);
  });

  it('serializes the same graph to the same bytes', () => {
    const build = () => {
      const g = new Graph('mlp');
      const x = g.input('x', 'float32', [4, 3]);
      g.output(linear(x, g.weight('fc.weight', [2, 3], uniform(6, 1)), g.weight('fc.bias', [2], uniform(2, 2))), 'y');
      return serialize(g);
    };
    expect(Buffer.from(build()).equals(Buffer.from(build()))).toBe(true);
  });

  it('computes what the operators mean on onnxruntime', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2, 4, 3, 3]);
    const gamma = uniform(4, 3);
    const beta = uniform(4, 4);
    const normed = groupNorm(x, 2, g.weight('gamma', [4], gamma), g.weight('beta', [4], beta), 1e-5);
    g.output(normed, 'normed');
    const tokens = transpose(reshape(x, [2, 4, 9]), [0, 2, 1]);
    g.output(softmax(matmul(tokens, transpose(tokens, [0, 2, 1]))), 'attn');
    g.output(concat([reduceMean(x, [1]), reduceMean(x, [1])], 1), 'means');
    const xs = uniform(72, 5);
    const out = await runModel(serialize(g), { x: new ort.Tensor('float32', xs, [2, 4, 3, 3]) });

    // group norm by hand: groups of 2 channels x 9 pixels
    const normedData = out.normed.data as Float32Array;
    for (let n = 0; n < 2; n++) {
      for (let group = 0; group < 2; group++) {
        const base = n * 36 + group * 18;
        const values = Array.from(xs.subarray(base, base + 18));
        const mean = values.reduce((a, b) => a + b) / 18;
        const variance = values.reduce((a, b) => a + (b - mean) ** 2, 0) / 18;
        values.forEach((v, i) => {
          const channel = group * 2 + Math.floor(i / 9);
          const expected = ((v - mean) / Math.sqrt(variance + 1e-5)) * gamma[channel] + beta[channel];
          expect(normedData[base + i]).toBeCloseTo(expected, 5);
        });
      }
    }
    const rows = out.attn.data as Float32Array;
    for (let r = 0; r < 18; r++) expect(rows.subarray(r * 9, r * 9 + 9).reduce((a, b) => a + b)).toBeCloseTo(1, 5);
    expect(out.means.dims).toEqual([2, 2, 3, 3]);
  });

  it('stores weights as external data beside the model and loads them from the path', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [1, 3]);
    const w = uniform(12, 7);
    g.output(matmul(x, g.weight('w', [3, 4], w)), 'y');
    const dir = mkdtempSync(join(tmpdir(), 'graph-'));
    const hash = saveWithExternalData(g, join(dir, 'model.onnx'));
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
    expect(readFileSync(join(dir, 'model.onnx')).byteLength).toBeLessThan(1000);
    const out = await runModel(join(dir, 'model.onnx'), { x: new ort.Tensor('float32', Float32Array.of(1, 2, 3), [1, 3]) });
    const expected = [0, 1, 2, 3].map((j) => w[j] + 2 * w[4 + j] + 3 * w[8 + j]);
    Array.from(out.y.data as Float32Array).forEach((v, j) => expect(v).toBeCloseTo(expected[j], 5));
  });
});
