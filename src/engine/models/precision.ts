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
   * Attention as one onnxruntime MultiHeadAttention instead of matmuls and a softmax. Train steps use it on the CPU
   * (its gradient recomputes the probabilities a block of rows at a time: see `attentionGradient`) and keep the
   * decomposed form elsewhere: differentiated on CUDA with TF32 off, the fused one missed the LoRA-gradient bound
   * (1.4e-3 against 1e-4; 3e-6 on the CPU), the CUDA kernel's float32 path being less exact than the cuBLAS matmuls.
   */
  fusedAttention: boolean;
  /**
   * How the weights are stored when not as `dtype`: float16 halves a float32 train step's frozen UNet (each weight cast
   * to float32 where it is used, as diffusers' scripts keep frozen weights in float16 under mixed precision). Only
   * with recomputation: the casts then live one block at a time rather than from the forward pass to the backward.
   */
  weightStorage?: 'float16';
}

/** Every operator standard ONNX: what any provider runs, float64 included (the gradient checks); train steps use it. */
export const FLOAT32: Precision = { dtype: 'float32', fusedAttention: false };

/**
 * What a device runs best: float16 with fused attention on CUDA (onnxruntime's CUDA provider has fp16 kernels for
 * every operator the models use, and the contrib GroupNorm), float32 elsewhere (its CPU has few fp16 kernels).
 */
export function precisionFor(device: EngineDevice): Precision {
  return device === 'cuda' ? { dtype: 'float16', fusedAttention: true } : FLOAT32;
}
