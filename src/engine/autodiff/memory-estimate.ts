import { totalmem } from 'node:os';
import { BYTES_PER_ELEMENT } from '../graph/dtype';
import { type Graph } from '../graph/graph';
import { sizeOf } from '../graph/shape';

/** What a train step of a forward graph holds at most when it keeps every activation for its backward pass. */
export interface TrainingMemoryEstimate {
  /** The weights bound to the graph (frozen ones are held for the whole session). */
  weightBytes: number;
  /** Every tensor the forward pass computes: an upper bound of what its backward pass keeps. */
  activationBytes: number;
}

export function estimateTrainingMemory(graph: Graph): TrainingMemoryEstimate {
  let weightBytes = 0;
  for (const { data } of graph.weights.values()) weightBytes += data?.byteLength ?? 0;
  let activationBytes = 0;
  for (const node of graph.nodes) {
    for (const output of node.outputs) activationBytes += sizeOf(output.shape) * BYTES_PER_ELEMENT[output.dtype];
  }
  return { weightBytes, activationBytes };
}

/**
 * The share of the machine's memory a train step plans to use by default; the rest is the platform's, other
 * sessions' and onnxruntime's own (its arena and the backward pass's temporaries).
 */
const DEFAULT_BUDGET_SHARE = 0.6;

/** Whether a train step of `graph` should recompute its activations (see `gradients`) to stay within `budgetBytes`. */
export function needsRecomputation(graph: Graph, budgetBytes = totalmem() * DEFAULT_BUDGET_SHARE): boolean {
  const { weightBytes, activationBytes } = estimateTrainingMemory(graph);
  return weightBytes + activationBytes > budgetBytes;
}
