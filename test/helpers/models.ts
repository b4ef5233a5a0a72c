import * as ort from 'onnxruntime-node';
import { type Graph, serialize } from '../../src/engine/graph';
import { type StoredTensor, toFloat32 } from '../../src/engine/weights/safetensors';

/** Binds checkpoint tensors to the graph's weights by name; a name the graph lacks, or a shape mismatch, throws. */
export function bindStored(g: Graph, stored: Map<string, StoredTensor>): void {
  for (const [name, tensor] of stored) {
    const weight = g.weights.get(name);
    if (!weight) throw new Error(`checkpoint tensor ${name} is not a weight of ${g.name}`);
    if (weight.tensor.shape.join() !== tensor.shape.join()) throw new Error(`${name}: [${tensor.shape}] vs graph [${weight.tensor.shape}]`);
    weight.data = toFloat32(tensor);
  }
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
