import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import {
  type AdamWOptions, type BuiltGraph, buildTrainStep, compile, type CompiledGraph, saveBuilt, type SavedGraph,
} from '../autodiff';
import { add, chunk, Graph, mul, reduceMean, sub, type Tensor } from '../graph';
import { ATTENTION_TARGETS, LoraSlots } from '../models/lora';
import { FLOAT32, type Precision } from '../models/precision';
import { buildUNet } from '../models/unet';
import { INLINE_WEIGHT_BYTES, initializerBytes } from './sessions';
import { attachWeights, type StableDiffusionModels } from './stable-diffusion';

/** What the train step needs of a model: the UNet, the text length and the training noise schedule. */
export type UNetTrainingModels = Pick<StableDiffusionModels, 'unet' | 'tokenizer' | 'scheduler'>;

/** LoRA of `rank` on the UNet's linear layers whose names end with one of `targets`, or every UNet parameter. */
export type TrainingMethod = { kind: 'lora'; rank: number; targets?: string[] } | { kind: 'full' };

/** What fixes a train-step graph: the method, the batch shape and the optimizer constants. */
export interface StepShape {
  method: TrainingMethod;
  /** Instance rows per step; as many prior rows follow them when `prior` is set. */
  batchSize: number;
  prior: boolean;
  /** Latent height and width. */
  latentSize: number;
  optimizer: AdamWOptions;
  /** Recompute each UNet block's activations in the backward pass instead of keeping them (see `gradients`). */
  recompute: boolean;
  /**
   * Attention as onnxruntime's MultiHeadAttention, whose gradient recomputes the probabilities a block of rows at a
   * time instead of keeping [rows, heads, tokens, tokens] maps from the forward pass (see `Precision.fusedAttention`).
   */
  fusedAttention: boolean;
  /** Store the frozen UNet weights as float16, cast at use (see `Precision.weightStorage`); LoRA with `recompute` only. */
  frozenFloat16: boolean;
}

/** A DreamBooth loss graph: the UNet (with LoRA slots, for LoRA) and the loss, before differentiation. */
export interface LossGraph {
  graph: Graph;
  loss: Tensor;
  /** The weights training updates, by graph weight name (peft `…lora_A.weight` names for LoRA). */
  trainable: string[];
  slots?: LoraSlots;
}

const mse = (a: Tensor, b: Tensor) => {
  const d = sub(a, b);
  return reduceMean(mul(d, d), [...a.shape.keys()], false);
};

/**
 * The loss of diffusers' train_dreambooth(_lora).py on one batch. Inputs: `noisy_latents` and `target` (the DDPM
 * forward process and the epsilon or v target, computed on the host in float64), `timesteps` (int64),
 * `encoder_hidden_states`, and with prior preservation `prior_loss_weight` (a scalar input, so one compiled step
 * serves every weight). Rows [0, N) are instances, [N, 2N) prior images:
 * loss = mse(instance rows) + prior_loss_weight * mse(prior rows), or mse over all rows without prior.
 * Frozen UNet weights are bound from `models`; trainable ones are left for the caller to feed.
 */
export function buildDreamBoothLoss(models: UNetTrainingModels, shape: StepShape): LossGraph {
  const { config, weights } = models.unet;
  const rows = shape.batchSize * (shape.prior ? 2 : 1);
  const latentShape = [rows, config.raw.in_channels, shape.latentSize, shape.latentSize];
  const g = new Graph('dreambooth_step');
  const { method } = shape;
  const slots = method.kind === 'lora' ? new LoraSlots(g, method.rank, method.targets ?? ATTENTION_TARGETS) : undefined;
  const noisy = g.input('noisy_latents', 'float32', latentShape);
  const target = g.input('target', 'float32', latentShape);
  const timesteps = g.input('timesteps', 'int64', [rows]);
  const states = g.input('encoder_hidden_states', 'float32', [rows, models.tokenizer.maxLength, config.crossAttentionDim[0]]);
  const precision: Precision = { ...FLOAT32, fusedAttention: shape.fusedAttention, ...(shape.frozenFloat16 ? { weightStorage: 'float16' } : {}) };
  const pred = buildUNet(g, config, noisy, timesteps, states, { precision, ...(slots ? { linear: slots.linear } : {}) });
  let loss: Tensor;
  if (shape.prior) {
    const [predInstance, predPrior] = chunk(pred, 2, 0);
    const [targetInstance, targetPrior] = chunk(target, 2, 0);
    loss = add(mse(predInstance, targetInstance), mul(mse(predPrior, targetPrior), g.input('prior_loss_weight', 'float32', [])));
  } else {
    loss = mse(pred, target);
  }
  const trainable = slots ? [...slots.names()] : [...weights.keys()];
  attachWeights(g, weights, new Set(trainable));
  return { graph: g, loss, trainable, slots };
}

/** One folder per process for steps over the inline limit (gigabytes at SD size), removed when the process exits. */
function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'dreambooth-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const compiled = new WeakMap<UNetTrainingModels, Map<string, CompiledGraph | SavedGraph>>();
let scratch: string | undefined;

/**
 * The train step of `shape` for these models, compiled once and kept while the models live (the runtime then
 * caches its session by the content hash). LoRA steps carry the frozen UNet as initializers.
 */
export function dreamBoothTrainStep(
  models: UNetTrainingModels, shape: StepShape, maxGradNorm: number | undefined,
): CompiledGraph | SavedGraph {
  const byShape = compiled.get(models) ?? compiled.set(models, new Map()).get(models)!;
  const key = JSON.stringify({ ...shape, maxGradNorm });
  let step = byShape.get(key);
  if (!step) {
    const { graph, loss, trainable } = buildDreamBoothLoss(models, shape);
    step = compileBuilt(buildTrainStep({ graph, loss, trainable, optimizer: { ...shape.optimizer, maxGradNorm }, recompute: shape.recompute }));
    byShape.set(key, step);
  }
  return step;
}

/** Serializes a built graph in memory, or with external data under the scratch folder when its frozen weights are large. */
export function compileBuilt(built: BuiltGraph): CompiledGraph | SavedGraph {
  if (initializerBytes(built.graph, built.weightsAsInputs) < INLINE_WEIGHT_BYTES) return compile(built);
  scratch ??= scratchDir();
  return saveBuilt(built, join(scratch, `${built.graph.name}-${randomUUID()}.onnx`));
}
