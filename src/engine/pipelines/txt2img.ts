import { randomInt } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { z } from 'zod';
import { add, chunk, clamp, concat, div, Graph, mul, sizeOf, sub, transpose } from '../graph';
import { type LoraLayer, LoraSlots } from '../models/lora';
import { type Precision, precisionFor } from '../models/precision';
import { buildUNet } from '../models/unet';
import { buildVaeDecoder } from '../models/vae';
import { Rng } from '../random';
import { type EngineWorker, type SessionHandle, type TensorData } from '../runtime';
import { createScheduler, SAMPLER_NAMES, type SamplerName, type SchedulerName } from '../schedulers';
import { describeIssues } from '../validation';
import { openGraphSession } from './sessions';
import { attachWeights, imageGeometry, type ImageGeometry, type StableDiffusionModels, textEncoderGraph } from './stable-diffusion';

/**
 * Why a request's sampler or image size cannot run on a model (its geometry and its pack's
 * scheduler), or undefined. The pipeline checks it, and so can a service before queueing the request.
 */
export function txt2imgProblem(
  model: { geometry: ImageGeometry; scheduler: SchedulerName | undefined },
  request: { scheduler?: SamplerName | null; width?: number | null; height?: number | null },
): string | undefined {
  const sampler = request.scheduler ?? model.scheduler;
  if (!sampler || sampler === 'ddpm') return "the pack's scheduler is not one we sample with: name a scheduler";
  const { nativeSize, sideMultiple } = model.geometry;
  for (const [name, size] of [['width', request.width ?? nativeSize], ['height', request.height ?? nativeSize]] as const) {
    if (size % 8 || size % sideMultiple) return `${name} ${size} must be a multiple of 8 and of ${sideMultiple} for this model`;
  }
  return undefined;
}

/** A txt2img request the pipeline cannot honour; nothing was computed. */
export class Txt2ImgError extends Error {
  override readonly name = 'Txt2ImgError';
}

const REQUEST = z.object({
  prompt: z.string(),
  negativePrompt: z.string().default(''),
  /** Classifier-free guidance; at 1 or below the unconditional pass is skipped, as diffusers does. */
  guidanceScale: z.number().finite().min(0).default(7.5),
  steps: z.number().int().min(1).max(1000).default(50),
  /** Defaults to the pack's scheduler. */
  scheduler: z.enum(SAMPLER_NAMES).optional(),
  /**
   * scheduler_config.json keys to sample with instead of the pack's (e.g. `timestep_spacing`,
   * `use_karras_sigmas`); keys the scheduler does not know are ignored, missing ones take its defaults.
   */
  schedulerConfig: z.record(z.string(), z.unknown()).optional(),
  /** Seeds the initial latents and any sampler noise (`src/engine/random.ts`); drawn at random if absent. */
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  /** Initial latents [numImages, latent_channels, height / f, width / f] of unit variance, instead of seeded ones. */
  latents: z.custom<Float32Array>((value) => value instanceof Float32Array, 'expected a Float32Array').optional(),
  /** Pixels, multiples of 8; default the UNet's sample_size times the VAE's downscaling. */
  width: z.number().int().positive().multipleOf(8).optional(),
  height: z.number().int().positive().multipleOf(8).optional(),
  numImages: z.number().int().min(1).max(16).default(1),
  /**
   * A UNet LoRA (`parseUNetLora`) applied at `scale`. The UNet graph gets slots of the LoRA's rank on its layers,
   * so LoRAs of the same rank and layers share one compiled graph and differ only in what is fed.
   */
  lora: z.object({
    weights: z.custom<ReadonlyMap<string, LoraLayer>>((value) => value instanceof Map && value.size > 0, 'expected parsed LoRA layers'),
    scale: z.number().finite().default(1),
  }).optional(),
});

export type Txt2ImgRequest = z.input<typeof REQUEST>;

export interface Txt2ImgProgress {
  /** 1-based, up to `steps`: the steps the request asked for (not model evaluations, of which PNDM runs one more). */
  step: number;
  steps: number;
  timestep: number;
}

export interface Txt2ImgPipelineOptions {
  /** How the graphs compute; by default what the worker's device runs best (`precisionFor`): float16 on CUDA. */
  precision?: Precision;
}

export interface Txt2ImgOptions {
  onStep?: (progress: Txt2ImgProgress) => void;
  /** Checked before every step and before decoding; an aborted run rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface Txt2ImgResult {
  /** [count, height, width, channels] in [0, 1], as diffusers' `output_type="np"`. */
  images: Float32Array;
  count: number;
  height: number;
  width: number;
  channels: number;
  /** The seed that reproduces this result with the same request. */
  seed: number;
}

/**
 * Stable Diffusion text-to-image as diffusers' StableDiffusionPipeline computes it: CLIP text embeddings
 * of the negative and positive prompt, a scheduler loop over the UNet with classifier-free guidance,
 * and the VAE decoder. Graphs are compiled per image shape and kept until `close()`.
 */
export class Txt2ImgPipeline {
  readonly #sessions = new Map<string, Promise<SessionHandle>>();
  /** The LoRA slots of each compiled LoRA denoiser, by session key. */
  readonly #slots = new Map<string, LoraSlots>();
  #scratch: Promise<string> | undefined;
  readonly precision: Precision;

  constructor(readonly models: StableDiffusionModels, readonly worker: EngineWorker, options: Txt2ImgPipelineOptions = {}) {
    this.precision = options.precision ?? precisionFor(worker.device);
  }

  async generate(request: Txt2ImgRequest, { onStep, signal }: Txt2ImgOptions = {}): Promise<Txt2ImgResult> {
    const r = this.#validate(request);
    signal?.throwIfAborted();
    const { unet, vae } = this.models;
    const scheduler = createScheduler(r.schedulerName, r.schedulerConfig ?? this.models.scheduler.config);
    scheduler.setTimesteps(r.steps);

    const guided = r.guidanceScale > 1;
    // Rows [negative x N, prompt x N], matching the [latents; latents] the denoiser feeds the UNet.
    const states = await this.#encodePrompts(guided ? [r.negativePrompt, r.prompt] : [r.prompt], r.numImages);

    const rng = new Rng(r.seed);
    const latentShape = [r.numImages, unet.config.raw.in_channels, r.height / r.vaeFactor, r.width / r.vaeFactor];
    const initial = r.latents ? Float64Array.from(r.latents) : rng.normal(sizeOf(latentShape));
    let latents: Float64Array = initial.map((x) => x * scheduler.initNoiseSigma);
    const { loraShape } = r;
    const denoiserKey = `unet:${latentShape}:${guided}${loraShape ? `:lora${loraShape.rank}:${loraShape.modules.join()}` : ''}`;
    const denoiser = () => this.#denoiserGraph(denoiserKey, latentShape, states.dims, guided, loraShape);
    const loraFeeds = r.lora && (await this.#denoiserSlots(denoiserKey, denoiser)).feeds(r.lora.weights, r.lora.scale);
    for (const [i, t] of scheduler.timesteps.entries()) {
      signal?.throwIfAborted();
      const feeds: Record<string, TensorData> = {
        latents: { dtype: 'float32', dims: latentShape, data: Float32Array.from(scheduler.scaleModelInput(latents, t)) },
        timestep: { dtype: 'float32', dims: [1], data: Float32Array.of(t) },
        // A copy: the worker takes ownership of the buffers it is sent.
        encoder_hidden_states: { dtype: 'float32', dims: states.dims, data: states.data.slice() },
      };
      if (guided) feeds.guidance_scale = { dtype: 'float32', dims: [1], data: Float32Array.of(r.guidanceScale) };
      for (const [name, tensor] of Object.entries(loraFeeds ?? {})) feeds[name] = { ...tensor, data: tensor.data.slice() } as TensorData;
      const { noise } = await this.#run(denoiserKey, denoiser, feeds);
      latents = scheduler.step(Float64Array.from(noise.data as Float32Array), t, latents, rng);
      // PNDM evaluates its second timestep twice (a warm-up), so it runs one evaluation more than the steps
      // asked for. Counted back from the last evaluation, each step asked for is reported once, the last as N/N.
      const step = r.steps - (scheduler.timesteps.length - 1 - i);
      if (step > 0) onStep?.({ step, steps: r.steps, timestep: t });
    }
    signal?.throwIfAborted();

    const { image } = await this.#run(`vae:${latentShape}`, () => this.#decoderGraph(latentShape), {
      latents: { dtype: 'float32', dims: latentShape, data: Float32Array.from(latents) },
    });
    return { images: image.data as Float32Array, count: r.numImages, height: r.height, width: r.width, channels: vae.config.out_channels, seed: r.seed };
  }

  /** CLIP embeddings of each prompt, repeated once per image: [prompts x numImages, sequence, hidden]. */
  async #encodePrompts(prompts: string[], numImages: number): Promise<{ dims: number[]; data: Float32Array }> {
    const { tokenizer } = this.models;
    const sequence = tokenizer.maxLength;
    const ids = BigInt64Array.from(prompts.flatMap((text) => tokenizer.encodePadded(text)), BigInt);
    const { last_hidden_state: encoded } = await this.#run(`text:${prompts.length}`, () => textEncoderGraph(this.models, prompts.length, sequence, this.precision), {
      input_ids: { dtype: 'int64', dims: [prompts.length, sequence], data: ids },
    });
    const rowSize = encoded.data.length / prompts.length;
    const data = new Float32Array(rowSize * prompts.length * numImages);
    for (let row = 0; row < prompts.length * numImages; row++) {
      const prompt = Math.floor(row / numImages);
      data.set((encoded.data as Float32Array).subarray(prompt * rowSize, (prompt + 1) * rowSize), row * rowSize);
    }
    return { dims: [prompts.length * numImages, sequence, rowSize / sequence], data };
  }

  /** Releases every compiled session and the scratch files of large graphs. */
  async close(): Promise<void> {
    const sessions = [...this.#sessions.values()];
    this.#sessions.clear();
    this.#slots.clear();
    for (const session of await Promise.allSettled(sessions)) {
      if (session.status === 'fulfilled') await this.worker.release(session.value);
    }
    if (this.#scratch) await rm(await this.#scratch, { recursive: true, force: true });
    this.#scratch = undefined;
  }

  #validate(request: Txt2ImgRequest) {
    const parsed = REQUEST.safeParse(request);
    if (!parsed.success) {
      throw new Txt2ImgError(describeIssues(parsed.error));
    }
    const r = parsed.data;
    const { unet, scheduler } = this.models;
    const geometry = imageGeometry(this.models);
    const problem = txt2imgProblem({ geometry, scheduler: scheduler.name }, r);
    if (problem) throw new Txt2ImgError(problem);
    const schedulerName = (r.scheduler ?? scheduler.name)!;
    const { vaeFactor, nativeSize } = geometry;
    const width = r.width ?? nativeSize;
    const height = r.height ?? nativeSize;
    const latentCount = r.numImages * unet.config.raw.in_channels * (height / vaeFactor) * (width / vaeFactor);
    if (r.latents && r.latents.length !== latentCount) {
      throw new Txt2ImgError(`latents hold ${r.latents.length} values; ${r.numImages} image(s) of ${width}x${height} need ${latentCount}`);
    }
    const loraShape = r.lora && { rank: Math.max(...[...r.lora.weights.values()].map((layer) => layer.rank)), modules: [...r.lora.weights.keys()].sort() };
    if (r.lora) this.#checkLora(r.lora.weights, loraShape!);
    return { ...r, loraShape, schedulerName, width, height, vaeFactor, seed: r.seed ?? randomInt(2 ** 47) };
  }

  /**
   * A LoraError, before anything is compiled or run, when the LoRA adapts layers the UNet lacks or has other
   * shapes than it: its slots on a UNet graph built for a nominal input (weights do not depend on the input).
   */
  #checkLora(weights: ReadonlyMap<string, LoraLayer>, { rank, modules }: { rank: number; modules: string[] }): void {
    const { config } = this.models.unet;
    const g = new Graph('lora_check');
    const slots = new LoraSlots(g, rank, modules);
    const size = 2 ** config.blockOutChannels.length;
    buildUNet(g, config, g.input('sample', 'float32', [1, config.raw.in_channels, size, size]), g.input('timestep', 'float32', [1]),
      g.input('encoder_hidden_states', 'float32', [1, 1, config.crossAttentionDim[0]]), { linear: slots.linear });
    slots.values(weights);
  }

  /** Runs a cached session, compiling its graph on first use. */
  async #run(key: string, build: () => Graph, feeds: Parameters<EngineWorker['run']>[1]) {
    return this.worker.run(await this.#session(key, build), feeds);
  }

  #session(key: string, build: () => Graph): Promise<SessionHandle> {
    let session = this.#sessions.get(key);
    if (!session) {
      session = (async () => {
        const g = build();
        const fed = this.#slots.get(key)?.names();
        return openGraphSession(this.worker, g, await this.#scratchDir(), { weightsAsInputs: fed });
      })();
      this.#sessions.set(key, session);
      session.catch(() => this.#sessions.delete(key));
    }
    return session;
  }

  /** The LoRA slots of a LoRA denoiser, compiling it on first use. */
  async #denoiserSlots(key: string, build: () => Graph): Promise<LoraSlots> {
    await this.#session(key, build);
    return this.#slots.get(key)!;
  }

  #scratchDir(): Promise<string> {
    this.#scratch ??= mkdtemp(join(tmpdir(), 'txt2img-'));
    return this.#scratch;
  }

  /**
   * One denoising evaluation: the UNet on [uncond; cond] copies of the latents, combined by the guidance scale.
   * With `lora`, the named linear layers get LoRA slots of its rank, fed with every run.
   */
  #denoiserGraph(key: string, latentShape: number[], statesShape: number[], guided: boolean, lora?: { rank: number; modules: string[] }): Graph {
    const { config, weights } = this.models.unet;
    const g = new Graph('denoiser');
    const slots = lora && new LoraSlots(g, lora.rank, lora.modules);
    const latents = g.input('latents', 'float32', latentShape);
    const timestep = g.input('timestep', 'float32', [1]);
    const states = g.input('encoder_hidden_states', 'float32', statesShape);
    const sample = guided ? concat([latents, latents], 0) : latents;
    let noise = buildUNet(g, config, sample, timestep, states, { linear: slots?.linear, precision: this.precision });
    if (guided) {
      const [uncond, cond] = chunk(noise, 2, 0);
      noise = add(uncond, mul(g.input('guidance_scale', 'float32', [1]), sub(cond, uncond)));
    }
    g.output(noise, 'noise');
    attachWeights(g, weights, slots?.names());
    if (slots) this.#slots.set(key, slots);
    return g;
  }

  /** VAE decode of latents / scaling_factor, then diffusers' postprocess: NHWC, (x / 2 + 0.5) clamped to [0, 1]. */
  #decoderGraph(latentShape: number[]): Graph {
    const { config, weights } = this.models.vae;
    const g = new Graph('vae_decoder');
    const decoded = buildVaeDecoder(g, config, div(g.input('latents', 'float32', latentShape), config.scaling_factor), { precision: this.precision });
    g.output(transpose(clamp(add(div(decoded, 2), 0.5), 0, 1), [0, 2, 3, 1]), 'image');
    attachWeights(g, weights);
    return g;
  }
}

/** PNG files of a result's images, rounded to 8 bits as diffusers' `numpy_to_pil` does. */
export async function encodePngs(result: Txt2ImgResult): Promise<Buffer[]> {
  const pixels = result.height * result.width * result.channels;
  return Promise.all(Array.from({ length: result.count }, (_, n) => {
    const bytes = Uint8Array.from(result.images.subarray(n * pixels, (n + 1) * pixels), (x) => Math.round(x * 255));
    return sharp(bytes, { raw: { width: result.width, height: result.height, channels: result.channels as 1 | 2 | 3 | 4 } }).png().toBuffer();
  }));
}
