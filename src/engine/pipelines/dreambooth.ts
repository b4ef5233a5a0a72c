import { z } from 'zod';
import { type AdamWOptions, needsRecomputation, sessionModel, Trainer, type TrainerCheckpoint } from '../autodiff';
import { sizeOf } from '../graph';
import { type LoraLayer } from '../models/lora';
import { Rng, type RngState } from '../random';
import { type EngineWorker, type SessionHandle, type TensorData } from '../runtime';
import { createScheduler, type DdpmScheduler, resolveSchedulerConfig } from '../schedulers';
import { describeIssues } from '../validation';
import {
  buildDreamBoothLoss, compileBuilt, dreamBoothTrainStep, type LossGraph, type StepShape, type UNetTrainingModels,
} from './dreambooth-graph';
import { loraFromSlots, type LoraWeights } from './lora-file';
import { imageGeometry, type StableDiffusionModels } from './stable-diffusion';
import { type Example, TrainingBatches } from './training-batches';
import { TrainingEncoders } from './training-encoders';

export type { TrainingMethod, UNetTrainingModels } from './dreambooth-graph';
export type { Example } from './training-batches';

/** A training request or trainer setting the engine cannot honour; nothing was trained. */
export class DreamBoothError extends Error {
  override readonly name = 'DreamBoothError';
}

/** Where training continues from: a previous LoRA (as `parseUNetLora` reads it) or a fully fine-tuned UNet. */
export type TrainingStart = { lora: ReadonlyMap<string, LoraLayer> } | { unet: ReadonlyMap<string, Float32Array> };

/**
 * One batch in latent space: rows [instances x N, prior x N] of `latents` (already times scaling_factor),
 * the `noise` to add, one training timestep per row and the rows' text embeddings.
 */
export interface LatentBatch {
  latents: Float32Array;
  noise: Float32Array;
  timesteps: number[];
  encoderHiddenStates: Float32Array;
}

/** The step's shape (`latentSize`: image resolution / the VAE's downscaling), optimizer defaults aside. */
export interface DreamBoothTrainerOptions extends Omit<StepShape, 'optimizer' | 'recompute' | 'fusedAttention' | 'frozenFloat16'> {
  optimizer?: Omit<AdamWOptions, 'maxGradNorm'>;
  /**
   * Recompute each UNet block's activations in the backward pass (less memory, about one more forward pass of
   * time); a LoRA step then also stores the frozen UNet in float16. Absent: on when the step would not fit by
   * `needsRecomputation`'s estimate.
   */
  recompute?: boolean;
  /** Clip gradients to this global norm; none when absent. */
  maxGradNorm?: number;
  start?: TrainingStart;
  /** Draws a new LoRA's initial down matrices when there is no start. */
  rng?: Rng;
  /** Continues a trainer from its `checkpoint()`, moments and step count included (`start` and `rng` are then unused). */
  resume?: TrainerCheckpoint;
}

/**
 * The DreamBooth train step on latent batches: one compiled graph (see `dreamBoothTrainStep`), parameters and
 * AdamW moments kept between steps. The DDPM forward process and the target are computed on the host in float64
 * with the pack's scheduler config, as diffusers' DDPMScheduler.add_noise / get_velocity do.
 */
export class DreamBoothTrainer {
  #evaluation: Promise<SessionHandle> | undefined;

  private constructor(
    readonly models: UNetTrainingModels,
    readonly worker: EngineWorker,
    private readonly trainer: Trainer,
    private readonly forward: LossGraph,
    private readonly shape: StepShape,
    private readonly scheduler: DdpmScheduler,
    private readonly predictionType: 'epsilon' | 'v_prediction',
  ) {}

  static async create(models: UNetTrainingModels, worker: EngineWorker, options: DreamBoothTrainerOptions): Promise<DreamBoothTrainer> {
    const schedulerConfig = resolveSchedulerConfig('ddpm', models.scheduler.config);
    const predictionType = schedulerConfig.prediction_type;
    if (predictionType === 'sample') throw new DreamBoothError('the pack\'s scheduler predicts samples; DreamBooth trains epsilon or v_prediction models');
    const shape: StepShape = {
      method: options.method, batchSize: options.batchSize, prior: options.prior, latentSize: options.latentSize, optimizer: options.optimizer ?? {},
      recompute: false,
      // The fused kernel is exact enough to train on only on the CPU (see Precision.fusedAttention).
      fusedAttention: worker.device === 'cpu',
      frozenFloat16: false,
    };
    // Kept for `loss`, whose evaluation graph binds the models' own float32 arrays (float16 ones would be copies).
    const forward = buildDreamBoothLoss(models, shape);
    shape.recompute = options.recompute ?? needsRecomputation(forward.graph);
    shape.frozenFloat16 = shape.recompute && shape.method.kind === 'lora';
    const initial = options.resume ?? Object.fromEntries(initialValues(models, forward, options));
    const trainer = await Trainer.create(worker, dreamBoothTrainStep(models, shape, options.maxGradNorm), initial, { lowMemory: shape.recompute });
    const scheduler = createScheduler('ddpm', models.scheduler.config);
    return new DreamBoothTrainer(models, worker, trainer, forward, shape, scheduler, predictionType);
  }

  get steps(): number {
    return this.trainer.steps;
  }

  /** Whether the step recomputes the UNet's activations in its backward pass. */
  get recomputes(): boolean {
    return this.shape.recompute;
  }

  /** The trainer's state between steps; `resume` with it continues bit for bit. */
  checkpoint(): TrainerCheckpoint {
    return this.trainer.checkpoint();
  }

  /** One AdamW step on `batch`; returns the loss before the update. */
  async step(batch: LatentBatch, lr: number, priorLossWeight = 1): Promise<{ loss: number; gradNorm: number }> {
    return this.trainer.step(this.#feeds(batch, priorLossWeight), lr);
  }

  /** The loss of the current weights on `batch`, changing nothing (a held-out measure). */
  async loss(batch: LatentBatch, priorLossWeight = 1): Promise<number> {
    const { graph, loss, trainable } = this.forward;
    this.#evaluation ??= (async () => {
      graph.output(loss, 'loss');
      const batchSpecs = graph.inputs.map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape] }));
      const compiled = compileBuilt({ graph, weightsAsInputs: new Set(trainable), batch: batchSpecs });
      return this.worker.createSession(sessionModel(compiled), { key: compiled.hash });
    })();
    const feeds = this.#feeds(batch, priorLossWeight);
    for (const name of trainable) {
      feeds[name] = { dtype: 'float32', dims: [...graph.weights.get(name)!.tensor.shape], data: this.trainer.param(name) as Float32Array };
    }
    const out = await this.worker.run(await this.#evaluation, feeds, ['loss']);
    return Number(out.loss.data[0]);
  }

  /** The trained weights now: a LoRA in diffusers key naming, or the whole UNet by checkpoint key. */
  weights(): { lora?: LoraWeights; unet?: Map<string, Float32Array> } {
    const values = new Map(this.forward.trainable.map((name) => [name, this.trainer.param(name) as Float32Array]));
    return this.forward.slots ? { lora: loraFromSlots(values) } : { unet: values };
  }

  async dispose(): Promise<void> {
    const evaluation = this.#evaluation;
    this.#evaluation = undefined;
    if (evaluation) await this.worker.release(await evaluation);
    await this.trainer.dispose();
  }

  #feeds(batch: LatentBatch, priorLossWeight: number): Record<string, TensorData> {
    const { batchSize, prior, latentSize } = this.shape;
    const rows = batchSize * (prior ? 2 : 1);
    const { config } = this.models.unet;
    const latentDims = [rows, config.raw.in_channels, latentSize, latentSize];
    const statesDims = [rows, this.models.tokenizer.maxLength, config.crossAttentionDim[0]];
    if (batch.latents.length !== sizeOf(latentDims) || batch.noise.length !== sizeOf(latentDims)
      || batch.timesteps.length !== rows || batch.encoderHiddenStates.length !== sizeOf(statesDims)) {
      throw new DreamBoothError(`a batch holds ${rows} rows: latents and noise [${latentDims}], ${rows} timesteps, encoder states [${statesDims}]`);
    }
    const latents = Float64Array.from(batch.latents);
    const noise = Float64Array.from(batch.noise);
    const noisy = this.scheduler.addNoise(latents, noise, batch.timesteps);
    const target = this.predictionType === 'epsilon' ? noise : this.scheduler.getVelocity(latents, noise, batch.timesteps);
    const feeds: Record<string, TensorData> = {
      noisy_latents: { dtype: 'float32', dims: latentDims, data: Float32Array.from(noisy) },
      target: { dtype: 'float32', dims: latentDims, data: Float32Array.from(target) },
      timesteps: { dtype: 'int64', dims: [rows], data: BigInt64Array.from(batch.timesteps, BigInt) },
      encoder_hidden_states: { dtype: 'float32', dims: statesDims, data: batch.encoderHiddenStates.slice() },
    };
    // alpha = rank, as diffusers' DreamBooth LoRA script configures peft: the LoRA enters at scale 1.
    if (this.forward.slots) feeds.lora_scale = { dtype: 'float32', dims: [], data: Float32Array.of(1) };
    if (prior) feeds.prior_loss_weight = { dtype: 'float32', dims: [], data: Float32Array.of(priorLossWeight) };
    return feeds;
  }
}

/**
 * Starting values of the trainable weights: the start's, else a new LoRA as diffusers' script initializes peft
 * (`init_lora_weights="gaussian"`: down ~ N(0, 1/rank²), up = 0, so training starts from the base model) or the
 * pack's UNet.
 */
function initialValues(models: UNetTrainingModels, forward: LossGraph, { start, rng }: DreamBoothTrainerOptions): Map<string, Float32Array> {
  const { slots } = forward;
  if (!slots) {
    if (start && 'lora' in start) throw new DreamBoothError('a LoRA cannot start a full fine-tune: merge it first or train a LoRA');
    const from = start?.unet ?? models.unet.weights;
    const unfit = forward.trainable.filter((name) => from.get(name)?.length !== models.unet.weights.get(name)!.length);
    if (unfit.length) throw new DreamBoothError(`the start UNet lacks or mis-sizes ${unfit.length} tensor(s): ${unfit.slice(0, 5).join(', ')}`);
    return new Map(forward.trainable.map((name) => [name, from.get(name)!]));
  }
  if (start && 'unet' in start) throw new DreamBoothError('a full UNet cannot start a LoRA: load it as the base model instead');
  if (start) {
    for (const [module, layer] of start.lora) {
      if (layer.rank !== slots.rank) throw new DreamBoothError(`the start LoRA has rank ${layer.rank} at ${module}; continue it with rank ${layer.rank}`);
    }
    return slots.values(start.lora);
  }
  const values = slots.values(null);
  if (!rng) throw new DreamBoothError('a new LoRA needs an rng for its initial weights');
  for (const [name, data] of values) {
    if (name.endsWith('.lora_A.weight')) data.set(rng.normalFloat32(data.length).map((x) => x / slots.rank));
  }
  return values;
}

const EXAMPLE = z.object({
  image: z.custom<Example['image']>((value) => typeof value === 'function', 'expected a function loading the picture'),
  prompt: z.string(),
});

/** Rows a step trains on at most: instance and prior examples alike. */
const MAX_EXAMPLES_PER_STEP = 64;

const REQUEST = z.object({
  instance: z.array(EXAMPLE).min(1),
  /** Prior-preservation examples; none trains without the prior term. */
  prior: z.array(EXAMPLE).default([]),
  method: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('lora'), rank: z.number().int().min(1).max(1024), targets: z.array(z.string().min(1)).min(1).optional() }),
    z.object({ kind: z.literal('full') }),
  ]),
  steps: z.number().int().min(1).max(100_000),
  /** Constant, as the scripts' default `lr_scheduler="constant"`. */
  learningRate: z.number().finite().positive(),
  /** Examples of each set per micro-batch (diffusers' `--train_batch_size`). */
  batchSize: z.number().int().min(1).max(MAX_EXAMPLES_PER_STEP).default(1),
  /**
   * Micro-batches per optimizer step (`--gradient_accumulation_steps`). Their mean gradient is the gradient of
   * the mean loss over all of them, so a step trains one graph on batchSize x gradientAccumulation examples of
   * each set: the same update, within float rounding, at the memory of the whole batch.
   */
  gradientAccumulation: z.number().int().min(1).max(MAX_EXAMPLES_PER_STEP).default(1),
  /** Which square of a non-square image trains: a new random one each time it is drawn (the scripts' default), or the center. */
  crop: z.enum(['random', 'center']).default('random'),
  /** Mirror each drawn image left to right with probability 1/2 (`--random_flip`). */
  flip: z.boolean().default(false),
  priorLossWeight: z.number().finite().min(0).default(1),
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** Training images' size in pixels; default the UNet's sample_size times the VAE's downscaling. */
  resolution: z.number().int().positive().multipleOf(8).optional(),
  adamW: z.object({
    betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
    eps: z.number().positive().default(1e-8),
    weightDecay: z.number().min(0).default(1e-2),
  }).default({ betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2 }),
  maxGradNorm: z.number().positive().default(1),
  start: z.custom<TrainingStart>((value) => typeof value === 'object' && value !== null
    && (('lora' in value && value.lora instanceof Map) || ('unet' in value && value.unet instanceof Map)), 'expected { lora } or { unet } weights').optional(),
  /** Continues an interrupted run of this same request from its checkpoint (`start` is then already inside it). */
  resume: z.custom<DreamBoothCheckpoint>((value) => typeof value === 'object' && value !== null && 'trainer' in value && 'rng' in value,
    'expected a DreamBoothCheckpoint').optional(),
}).refine((r) => r.batchSize * r.gradientAccumulation <= MAX_EXAMPLES_PER_STEP, {
  path: ['gradientAccumulation'], message: `batchSize x gradientAccumulation must be at most ${MAX_EXAMPLES_PER_STEP}`,
});

export type DreamBoothRequest = z.input<typeof REQUEST>;

export interface DreamBoothProgress {
  /** 1-based. */
  step: number;
  steps: number;
  /** The batch's loss before this step's update. */
  loss: number;
  lr: number;
}

/**
 * Everything a run carries from one step to the next, taken between steps: with the same request, `resume`
 * continues it and ends with the weights the uninterrupted run ends with, bit for bit.
 */
export interface DreamBoothCheckpoint {
  seed: number;
  /** Steps done. */
  step: number;
  /** Trainable weights, AdamW moments and step count. */
  trainer: TrainerCheckpoint;
  /** Where step `step + 1` draws its views, posterior samples, noise and timesteps. */
  rng: RngState;
  /** The shuffled orders the batches cycle through. */
  order: { instance: number[]; prior: number[] };
  /** Each step's loss so far. */
  losses: number[];
}

export interface DreamBoothCheckpoints {
  /** Steps between checkpoints, like diffusers' `--checkpointing_steps`; none after the last step, whose weights the run returns. */
  every: number;
  /** Stores a checkpoint; the run waits for it before its next step. */
  save(checkpoint: DreamBoothCheckpoint): Promise<void>;
}

export interface DreamBoothOptions {
  worker: EngineWorker;
  onStep?: (progress: DreamBoothProgress) => void;
  /** Checked before every step; an aborted run rejects with the signal's reason and returns no weights. */
  signal?: AbortSignal;
  checkpoints?: DreamBoothCheckpoints;
  /**
   * Checked before every step like `signal`, but the run first saves a checkpoint of where it stands (with
   * `checkpoints`): a worker that stops hands its run on to another.
   */
  drain?: AbortSignal;
}

export interface DreamBoothResult {
  /** For LoRA: diffusers key naming (`serializeLora` writes it, `parseUNetLora` reads it back). */
  lora?: LoraWeights;
  /** For full fine-tuning: every UNet parameter by checkpoint key. */
  unet?: Map<string, Float32Array>;
  /** Each step's loss. */
  losses: number[];
}

function validate(models: StableDiffusionModels, request: DreamBoothRequest) {
  const parsed = REQUEST.safeParse(request);
  if (!parsed.success) {
    throw new DreamBoothError(describeIssues(parsed.error));
  }
  const r = parsed.data;
  const { vaeFactor, sideMultiple, nativeSize } = imageGeometry(models);
  const resolution = r.resolution ?? nativeSize;
  if (resolution % sideMultiple) throw new DreamBoothError(`resolution ${resolution} must be a multiple of ${sideMultiple} for this model`);
  return { ...r, resolution, latentSize: resolution / vaeFactor, perStep: r.batchSize * r.gradientAccumulation };
}

/** A seeded order of `n` indices (Fisher-Yates), cycled through as the scripts' shuffling DataLoader does. */
function shuffled(n: number, rng: Rng): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.nextUniform() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/**
 * DreamBooth as diffusers' train_dreambooth.py / train_dreambooth_lora.py train it: each step N instance and
 * (with prior images) N prior examples (N = batchSize x gradientAccumulation), each a view of its image (random
 * or center crop, optional flip) with latents sampled afresh from the frozen VAE's posterior, text embeddings of
 * the frozen text encoder, seeded noise and timesteps uniform in [0, num_train_timesteps), loss = mse(instance)
 * + w * mse(prior) on the epsilon or v target, AdamW with gradient clipping at a constant learning rate. The
 * same request and seed give the same weights bit for bit. The seed's stream draws, in order: a new LoRA's
 * initial weights, the instance then the prior order, then per step the rows' views and posterior samples
 * (see `TrainingBatches.rows`), the noise and the timesteps.
 */
export async function trainDreamBooth(
  models: StableDiffusionModels, request: DreamBoothRequest, { worker, onStep, signal, checkpoints, drain }: DreamBoothOptions,
): Promise<DreamBoothResult> {
  const r = validate(models, request);
  const { resume } = r;
  if (resume && (resume.seed !== r.seed || resume.step >= r.steps || resume.order.instance.length !== r.instance.length
    || resume.order.prior.length !== r.prior.length)) {
    throw new DreamBoothError(`the checkpoint (seed ${resume.seed}, step ${resume.step}) is not of this request (seed ${r.seed}, ${r.steps} steps)`);
  }
  signal?.throwIfAborted();
  const rng = resume ? Rng.fromState(resume.rng) : new Rng(r.seed);
  const prior = r.prior.length > 0;
  const trainer = await DreamBoothTrainer.create(models, worker, {
    method: r.method, batchSize: r.perStep, prior, latentSize: r.latentSize,
    optimizer: r.adamW, maxGradNorm: r.maxGradNorm, start: r.start, rng, resume: resume?.trainer,
  });
  const encoders = new TrainingEncoders(models, worker, r.resolution);
  try {
    const order = resume?.order ?? { instance: shuffled(r.instance.length, rng), prior: shuffled(r.prior.length, rng) };
    const batches = new TrainingBatches(encoders, { instance: r.instance, prior: r.prior }, {
      resolution: r.resolution, perStep: r.perStep, crop: r.crop, flip: r.flip, order,
    });
    const losses = resume ? [...resume.losses] : [];
    let saved = resume?.step ?? 0;
    const save = async () => {
      saved = trainer.steps;
      await checkpoints!.save({ seed: r.seed, step: trainer.steps, trainer: trainer.checkpoint(), rng: rng.state(), order, losses: [...losses] });
    };
    const { num_train_timesteps: trainTimesteps } = resolveSchedulerConfig('ddpm', models.scheduler.config);
    for (let step = resume?.step ?? 0; step < r.steps; step++) {
      if (drain?.aborted) {
        if (checkpoints && step > saved) await save();
        throw drain.reason;
      }
      signal?.throwIfAborted();
      const { latents, encoderHiddenStates, rows } = await batches.rows(step, rng);
      const noise = rng.normalFloat32(latents.length);
      const timesteps = Array.from({ length: rows }, () => Math.floor(rng.nextUniform() * trainTimesteps));
      const { loss } = await trainer.step({ latents, noise, timesteps, encoderHiddenStates }, r.learningRate, r.priorLossWeight);
      losses.push(loss);
      onStep?.({ step: step + 1, steps: r.steps, loss, lr: r.learningRate });
      if (checkpoints && checkpoints.every > 0 && (step + 1) % checkpoints.every === 0 && step + 1 < r.steps) await save();
    }
    return { ...trainer.weights(), losses };
  } finally {
    await encoders.close();
    await trainer.dispose();
  }
}
