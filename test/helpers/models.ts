import * as ort from 'onnxruntime-node';
import { type Graph, serialize } from '../../src/engine/graph';
import { expectedWeights } from '../../src/engine/models/params';
import { bindWeights } from '../../src/engine/weights/bind';
import { type StoredTensor } from '../../src/engine/weights/safetensors';

/** Binds a checkpoint to the graph's weights: every weight present by name and shape, nothing left over. */
export function bindStored(g: Graph, stored: ReadonlyMap<string, StoredTensor>): void {
  for (const [name, data] of bindWeights(expectedWeights(g), stored)) g.weights.get(name)!.data = data;
}

/** Runs a graph once on onnxruntime (CPU) and returns its outputs by name. */
export async function runGraph(g: Graph, feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.OnnxValueMapType> {
  const session = await ort.InferenceSession.create(serialize(g));
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}
