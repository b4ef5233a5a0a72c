import * as ort from 'onnxruntime-node';
import { type Graph, serialize } from '../../src/engine/graph';
import { expectedWeights } from '../../src/engine/models/params';
import { Rng } from '../../src/engine/random';
import { bindWeights } from '../../src/engine/weights/bind';
import { float16BitsToFloat32, float32ToFloat16Bits } from '../../src/engine/weights/dtype';
import { fromFloat32, type StoredTensor, toFloat32 } from '../../src/engine/weights/safetensors';

/** Binds a checkpoint to the graph's weights: every weight present by name and shape, nothing left over. */
export function bindStored(g: Graph, stored: ReadonlyMap<string, StoredTensor>): void {
  for (const [name, data] of bindWeights(expectedWeights(g), stored)) g.weights.get(name)!.data = data;
}

/** Runs a model (bytes, or a file with its external data beside it) once on onnxruntime (CPU): its outputs by name. */
export async function runModel(model: Uint8Array | string, feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.OnnxValueMapType> {
  // create() has one overload for a path and one for bytes, and TypeScript takes no union across them.
  const session = await (typeof model === 'string' ? ort.InferenceSession.create(model) : ort.InferenceSession.create(model));
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

/** Runs a graph once on onnxruntime (CPU) and returns its outputs by name. */
export async function runGraph(g: Graph, feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.OnnxValueMapType> {
  return runModel(serialize(g), feeds);
}

/** Deterministic weights scaled by fan-in, norms near identity, so activations stay O(1) through the net. */
export function randomizeWeights(g: Graph, seed: number): void {
  const rng = new Rng(seed);
  for (const [name, shape] of expectedWeights(g)) {
    const values = rng.normalFloat32(shape.reduce((a, b) => a * b, 1));
    const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
    const isNorm = /norm/.test(name);
    g.weights.get(name)!.data = values.map((x) => (isNorm && name.endsWith('.weight') ? 1 + 0.1 * x : isNorm ? 0.1 * x : x / Math.sqrt(fanIn)));
  }
}

/**
 * A checkpoint stored as F16, and the same one kept F32 with each value rounded to half precision:
 * the F16 path must compute exactly what the rounded F32 one does.
 */
export function halfPrecisionPair(stored: ReadonlyMap<string, StoredTensor>): { half: Map<string, StoredTensor>; rounded: Map<string, StoredTensor> } {
  const half = new Map([...stored].map(([name, t]) => [name, fromFloat32(toFloat32(t), t.shape, 'F16')]));
  const rounded = new Map([...stored].map(([name, t]) =>
    [name, fromFloat32(toFloat32(t).map((x) => float16BitsToFloat32(float32ToFloat16Bits(x))), t.shape)]));
  return { half, rounded };
}
