import { type EngineDevice } from '../runtime';

/**
 * How an inference graph computes. Its inputs and outputs are float32 either way (the schedulers and the pipeline
 * stay in float32 in JS); a float16 model casts at its edges and keeps float32 where fp16 loses accuracy: GroupNorm
 * and LayerNorm statistics, the softmax, the timestep embedding.
 */
export interface Precision {
  /** Element type of the weights and activations (GroupNorm's weight and bias stay float32). */
  dtype: 'float32' | 'float16';
  /**
   * Attention as one onnxruntime MultiHeadAttention instead of matmuls and a softmax; its gradient recomputes the
   * probabilities, so a train step keeps no [batch, heads, tokens, tokens] map per layer for the backward pass.
   */
  fusedAttention: boolean;
}

/** Every operator standard ONNX: what any provider runs, float64 included (the gradient checks). */
export const FLOAT32: Precision = { dtype: 'float32', fusedAttention: false };

/** Train steps: float32, fused attention (a 512 px SD 1.5 step kept five 1 GiB probability maps for its backward). */
export const TRAINING: Precision = { dtype: 'float32', fusedAttention: true };

/**
 * What a device runs best: float16 with fused attention on CUDA (onnxruntime's CUDA provider has fp16 kernels for
 * every operator the models use, and the contrib GroupNorm), float32 elsewhere (its CPU has few fp16 kernels).
 */
export function precisionFor(device: EngineDevice): Precision {
  return device === 'cuda' ? { dtype: 'float16', fusedAttention: true } : FLOAT32;
}
