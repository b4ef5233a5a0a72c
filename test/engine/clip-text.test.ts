import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Graph } from '../../src/engine/graph';
import {
  buildClipTextEncoder, type ClipTextConfig, clipTextKeyPrefix, dropClipTextBuffers, parseClipTextConfig,
} from '../../src/engine/models/clip-text';
import { ModelConfigError } from '../../src/engine/models/config';
import { expectedWeights } from '../../src/engine/models/params';
import { Rng } from '../../src/engine/random';
import { readSafetensors, toFloat32, toIntegers } from '../../src/engine/weights/safetensors';
import { hasFixtures, loadReference, relativeL2, TINY_SD15 } from '../helpers/fixtures';
import { bindStored, runGraph } from '../helpers/models';

const PACK = join(TINY_SD15, 'pack', 'text_encoder');

function idsTensor(ids: readonly number[], dims: number[]): ort.Tensor {
  return new ort.Tensor('int64', BigInt64Array.from(ids, (v) => BigInt(v)), dims);
}

/** Builds the encoder graph for `batch` x `sequence` ids with outputs `last_hidden_state` and `pooled`. */
function encoderGraph(config: ClipTextConfig, batch: number, sequence: number, prefix = 'text_model'): Graph {
  const g = new Graph('clip_text');
  const { lastHiddenState, pooledOutput } = buildClipTextEncoder(g, config, g.input('input_ids', 'int64', [batch, sequence]), { prefix });
  g.output(lastHiddenState, 'last_hidden_state');
  g.output(pooledOutput, 'pooled');
  return g;
}

describe.skipIf(!hasFixtures)('CLIP text encoder on the tiny-sd15 pack', () => {
  it('matches transformers last_hidden_state (rel L2 < 1e-4)', async () => {
    const { tensors } = await loadReference();
    const config = parseClipTextConfig(JSON.parse(readFileSync(join(PACK, 'config.json'), 'utf8')));
    const stored = await readSafetensors(join(PACK, 'model.safetensors'));
    const ids = tensors.get('text_encoder.input_ids')!;
    const g = encoderGraph(config, ids.shape[0], ids.shape[1], clipTextKeyPrefix(stored.keys()));
    // The graph declares exactly the checkpoint's tensors, no more and no fewer.
    expect(new Set(expectedWeights(g).keys())).toEqual(new Set(stored.keys()));
    bindStored(g, stored);
    const out = await runGraph(g, { input_ids: idsTensor(toIntegers(ids), ids.shape) });
    const expected = toFloat32(tensors.get('text_encoder.last_hidden_state')!);
    expect(out.last_hidden_state.dims).toEqual(tensors.get('text_encoder.last_hidden_state')!.shape);
    const error = relativeL2(out.last_hidden_state.data as Float32Array, expected);
    expect(error).toBeLessThan(1e-4);

    // Pooled output: the hidden state at each row's first end-of-text token, as transformers picks it.
    const idList = toIntegers(ids);
    const [batch, sequence] = ids.shape;
    const hidden = config.hidden_size;
    const pooled = out.pooled.data as Float32Array;
    for (let b = 0; b < batch; b++) {
      const position = idList.slice(b * sequence, (b + 1) * sequence).indexOf(config.eos_token_id);
      expect(position).toBeGreaterThan(0);
      const row = expected.subarray((b * sequence + position) * hidden, (b * sequence + position + 1) * hidden);
      expect(relativeL2(pooled.subarray(b * hidden, (b + 1) * hidden), row)).toBeLessThan(1e-4);
    }
  });

  it('names weights after transformers 4 checkpoints (text_model.*) when the file does', async () => {
    const config = parseClipTextConfig(JSON.parse(readFileSync(join(PACK, 'config.json'), 'utf8')));
    const stored = await readSafetensors(join(PACK, 'model.safetensors'));
    const legacyKeys = [...stored.keys()].map((k) => `text_model.${k}`);
    expect(clipTextKeyPrefix(legacyKeys)).toBe('text_model');
    // transformers < 4.31 also saved the position_ids buffer, which is no parameter.
    const withBuffer = new Map([...legacyKeys, 'text_model.embeddings.position_ids'].map((k) => [k, k]));
    expect([...dropClipTextBuffers(withBuffer).keys()]).toEqual(legacyKeys);
    expect(new Set(expectedWeights(encoderGraph(config, 1, 77, clipTextKeyPrefix(legacyKeys))).keys())).toEqual(new Set(legacyKeys));
  });
});

/**
 * An independent float64 CLIPTextModel forward in plain loops, for configurations the fixtures do not
 * cover (a gelu encoder, another width, head count and depth).
 */
function referenceClip(config: ClipTextConfig, w: Map<string, Float32Array>, ids: number[], batch: number, sequence: number): Float64Array {
  const d = config.hidden_size;
  const heads = config.num_attention_heads;
  const hd = d / heads;
  const get = (name: string) => w.get(`text_model.${name}`)!;
  const linear = (x: Float64Array, rows: number, name: string, inF: number, outF: number) => {
    const W = get(`${name}.weight`);
    const B = get(`${name}.bias`);
    const y = new Float64Array(rows * outF);
    for (let r = 0; r < rows; r++) for (let o = 0; o < outF; o++) {
      let s = B[o];
      for (let i = 0; i < inF; i++) s += x[r * inF + i] * W[o * inF + i];
      y[r * outF + o] = s;
    }
    return y;
  };
  const layerNorm = (x: Float64Array, rows: number, name: string) => {
    const y = new Float64Array(x.length);
    const gamma = get(`${name}.weight`);
    const beta = get(`${name}.bias`);
    for (let r = 0; r < rows; r++) {
      const row = x.subarray(r * d, (r + 1) * d);
      const mean = row.reduce((a, b) => a + b, 0) / d;
      const variance = row.reduce((a, b) => a + (b - mean) ** 2, 0) / d;
      for (let i = 0; i < d; i++) y[r * d + i] = ((row[i] - mean) / Math.sqrt(variance + config.layer_norm_eps)) * gamma[i] + beta[i];
    }
    return y;
  };
  const erf = (x: number) => {
    // Abramowitz-Stegun 7.1.26 is too coarse; integrate the series instead (|x| stays small here).
    let sum = 0;
    let term = x;
    for (let n = 0; n < 80; n++) {
      sum += term / (2 * n + 1);
      term *= (-x * x) / (n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  };
  const act = config.hidden_act === 'gelu'
    ? (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2))
    : (x: number) => x / (1 + Math.exp(-1.702 * x));
  const rows = batch * sequence;
  let h = new Float64Array(rows * d);
  const tok = get('embeddings.token_embedding.weight');
  const pos = get('embeddings.position_embedding.weight');
  for (let r = 0; r < rows; r++) for (let i = 0; i < d; i++) h[r * d + i] = tok[ids[r] * d + i] + pos[(r % sequence) * d + i];
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const p = `encoder.layers.${l}`;
    const x = layerNorm(h, rows, `${p}.layer_norm1`);
    const q = linear(x, rows, `${p}.self_attn.q_proj`, d, d);
    const k = linear(x, rows, `${p}.self_attn.k_proj`, d, d);
    const v = linear(x, rows, `${p}.self_attn.v_proj`, d, d);
    const attended = new Float64Array(rows * d);
    for (let b = 0; b < batch; b++) for (let head = 0; head < heads; head++) for (let i = 0; i < sequence; i++) {
      const scores = [];
      for (let j = 0; j <= i; j++) {
        let s = 0;
        for (let c = 0; c < hd; c++) s += q[(b * sequence + i) * d + head * hd + c] * k[(b * sequence + j) * d + head * hd + c];
        scores.push(s / Math.sqrt(hd));
      }
      const max = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - max));
      const total = e.reduce((a, c) => a + c, 0);
      for (let c = 0; c < hd; c++) {
        let s = 0;
        for (let j = 0; j <= i; j++) s += (e[j] / total) * v[(b * sequence + j) * d + head * hd + c];
        attended[(b * sequence + i) * d + head * hd + c] = s;
      }
    }
    const o = linear(attended, rows, `${p}.self_attn.out_proj`, d, d);
    h = h.map((value, i) => value + o[i]);
    const inner = linear(layerNorm(h, rows, `${p}.layer_norm2`), rows, `${p}.mlp.fc1`, d, config.intermediate_size).map(act);
    const m = linear(inner, rows, `${p}.mlp.fc2`, config.intermediate_size, d);
    h = h.map((value, i) => value + m[i]);
  }
  return layerNorm(h, rows, 'final_layer_norm');
}

function randomWeights(g: Graph, seed: number): Map<string, Float32Array> {
  const rng = new Rng(seed);
  const weights = new Map<string, Float32Array>();
  for (const [name, shape] of expectedWeights(g)) {
    const values = rng.normalFloat32(shape.reduce((a, b) => a * b, 1));
    // Layer-norm gains near one, everything else small, as trained models have.
    weights.set(name, name.includes('norm') && name.endsWith('.weight') ? values.map((x) => 1 + 0.2 * x) : values.map((x) => 0.5 * x));
  }
  return weights;
}

describe('CLIP text encoder on generated configurations', () => {
  const base = {
    vocab_size: 50, hidden_size: 12, intermediate_size: 20, num_hidden_layers: 2, num_attention_heads: 3,
    max_position_embeddings: 9, layer_norm_eps: 1e-5, eos_token_id: 49,
  };
  const ids = [49, 3, 17, 8, 49, 49, 49, 49, 0, 5, 44, 2, 49, 31, 49, 49];

  for (const hidden_act of ['quick_gelu', 'gelu'] as const) {
    it(`computes a ${hidden_act} encoder as the formulas say`, async () => {
      const config = parseClipTextConfig({ ...base, hidden_act });
      const g = encoderGraph(config, 2, 8);
      const weights = randomWeights(g, 7);
      for (const [name, data] of weights) g.weights.get(name)!.data = data;
      const out = await runGraph(g, { input_ids: idsTensor(ids, [2, 8]) });
      const expected = referenceClip(config, weights, ids, 2, 8);
      expect(relativeL2(out.last_hidden_state.data as Float32Array, expected)).toBeLessThan(1e-5);
    });
  }

  it('gives different outputs for gelu and quick_gelu with the same weights', async () => {
    const run = async (hidden_act: string) => {
      const g = encoderGraph(parseClipTextConfig({ ...base, hidden_act }), 2, 8);
      for (const [name, data] of randomWeights(g, 7)) g.weights.get(name)!.data = data;
      return (await runGraph(g, { input_ids: idsTensor(ids, [2, 8]) })).last_hidden_state.data as Float32Array;
    };
    // quick_gelu approximates gelu to about 2e-2 per activation: the outputs must differ, yet stay close.
    const difference = relativeL2(await run('quick_gelu'), await run('gelu'));
    expect(difference).toBeGreaterThan(1e-4);
    expect(difference).toBeLessThan(0.2);
  });

  it('pools at the first end-of-text token, or for legacy configs (eos_token_id 2) at the first largest id', async () => {
    const hidden = base.hidden_size;
    for (const [eos_token_id, expected] of [[49, [0, 4]], [2, [5, 2]]] as const) {
      const g = encoderGraph(parseClipTextConfig({ ...base, eos_token_id }), 2, 8);
      for (const [name, data] of randomWeights(g, 3)) g.weights.get(name)!.data = data;
      // Legacy rows: the largest id (40, then 44) first occurs at positions 5 and 2.
      const rows = eos_token_id === 49 ? ids : [4, 3, 17, 8, 9, 40, 40, 1, 0, 5, 44, 2, 31, 31, 7, 7];
      const out = await runGraph(g, { input_ids: idsTensor(rows, [2, 8]) });
      const states = out.last_hidden_state.data as Float32Array;
      expected.forEach((position, b) => {
        const row = states.subarray((b * 8 + position) * hidden, (b * 8 + position + 1) * hidden);
        expect((out.pooled.data as Float32Array).subarray(b * hidden, (b + 1) * hidden)).toEqual(row);
      });
    }
  });

  it('declares the weights the config implies', () => {
    const config = parseClipTextConfig({ ...base, num_hidden_layers: 3 });
    const names = [...expectedWeights(encoderGraph(config, 1, 4, '')).keys()];
    expect(names).toHaveLength(2 + 3 * 16 + 2);
    expect(names.filter((n) => n.startsWith('encoder.layers.2.'))).toHaveLength(16);
    expect(expectedWeights(encoderGraph(config, 1, 4, '')).get('encoder.layers.1.mlp.fc1.weight')).toEqual([20, 12]);
  });

  it('rejects unusable configs and inputs with a clear error', () => {
    expect(() => parseClipTextConfig({ ...base, hidden_act: 'relu' })).toThrow(ModelConfigError);
    expect(() => parseClipTextConfig({ ...base, num_attention_heads: 5 })).toThrow(/multiple of num_attention_heads/);
    expect(() => parseClipTextConfig({ ...base, hidden_size: undefined })).toThrow(/hidden_size/);
    expect(() => encoderGraph(parseClipTextConfig(base), 1, 10)).toThrow(/<= 9/);
  });
});
