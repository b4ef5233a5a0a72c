/**
 * The scores, from images each model generates with fixed seeds (so every arm starts from the same latents):
 * - identity (subjects): `a <token> <category>`; mean cosine between the generated images' identity features and the
 *   concept's training images' (every pair);
 * - style (styles): `a <subject>, <token> style` for STYLE_PROMPT_SUBJECTS; the same with style features;
 * - prior integrity (per model): `a <subject>` for PRIOR_SUBJECTS, which no concept touches; mean cosine of identity
 *   features between each image and the base model's image of the same prompt and seed (1: drawn as before);
 * - composition: `a <subject token> <category>, <style token> style`; the mean of its identity score against the
 *   subject and its style score against the style.
 * Features are the encoder's, centred on the dataset's training images: 0 is as alike as two average emoji.
 * A model is the base model with an arm's weights: a LoRA fed to the base model's pipeline, or a full UNet in a
 * pipeline of its own.
 */
import { Txt2ImgPipeline, withUNetWeights, type LoraLayer, type TrainingStart } from '../../src/engine';
import { captionOf, IMAGE_SIZE } from '../../scripts/base-model/emoji-records';
import { type Concept, PRIOR_SUBJECTS, STYLE_PROMPT_SUBJECTS } from './concepts';
import { cosine, type Encoder, type Features } from './encoder';

export interface GenerationSettings {
  /** Images per concept prompt (subjects), and per composition. */
  images: number;
  steps: number;
  guidance: number;
  seed: number;
}

/** An arm's trained weights (a LoRA or a whole UNet): the shape a training starts from, so the naive arm continues from them. */
export type ArmWeights = TrainingStart;

/** A concept as a model knows it: its identifier. */
export interface Taught {
  concept: Concept;
  token: string;
}

export const conceptPrompt = ({ concept, token }: Taught) => `a ${token} ${concept.category}`;
export const stylePrompt = (subject: string, style: Taught) => `${captionOf({ subject, style: '' }, false)}, ${style.token} style`;
export const compositionPrompt = (subject: Taught, style: Taught) => `${conceptPrompt(subject)}, ${style.token} style`;

export interface Scored {
  score: number;
  /** The first images, for grids: 64 px RGB bytes. */
  samples: Uint8Array[];
}

const meanCosine = (a: readonly Float32Array[], b: readonly Float32Array[]) =>
  a.reduce((sum, x) => sum + b.reduce((inner, y) => inner + cosine(x, y), 0), 0) / (a.length * b.length);

/** Generates and scores; holds the reference features of each concept and the base model's prior images. */
export class Scorer {
  readonly #references = new Map<string, Features[]>();
  #basePrior: Features[] | undefined;
  /** A pipeline per full UNet scored since the last `release()`: its sessions are compiled once for all its images. */
  readonly #unetPipelines = new Map<ReadonlyMap<string, Float32Array>, Txt2ImgPipeline>();

  constructor(
    private readonly pipeline: Txt2ImgPipeline,
    private readonly encoder: Encoder,
    private readonly settings: GenerationSettings,
  ) {}

  /** Closes the pipelines of the full UNets scored so far (their sessions hold memory): once a stage is scored. */
  async release(): Promise<void> {
    const pipelines = [...this.#unetPipelines.values()];
    this.#unetPipelines.clear();
    for (const pipeline of pipelines) await pipeline.close();
  }

  /** The pipeline that draws with `weights` (undefined: the base model), and the LoRA to feed it. */
  #model(weights: ArmWeights | undefined): { pipeline: Txt2ImgPipeline; lora?: ReadonlyMap<string, LoraLayer> } {
    if (!weights || 'lora' in weights) return { pipeline: this.pipeline, lora: weights?.lora };
    let pipeline = this.#unetPipelines.get(weights.unet);
    if (!pipeline) {
      pipeline = new Txt2ImgPipeline(withUNetWeights(this.pipeline.models, weights.unet), this.pipeline.worker);
      this.#unetPipelines.set(weights.unet, pipeline);
    }
    return { pipeline };
  }

  /** `count` images of `prompt` from seed `settings.seed` (one run, so one latent stream), as 64 px RGB bytes. */
  async generate(prompt: string, weights: ArmWeights | undefined, count: number): Promise<Uint8Array[]> {
    const { steps, guidance, seed } = this.settings;
    const { pipeline, lora } = this.#model(weights);
    const result = await pipeline.generate({
      prompt, steps, guidanceScale: guidance, numImages: count, seed, width: IMAGE_SIZE, height: IMAGE_SIZE, lora: lora && { weights: lora },
    });
    const pixels = result.height * result.width * result.channels;
    return Array.from({ length: count }, (_, n) => Uint8Array.from(result.images.subarray(n * pixels, (n + 1) * pixels), (x) => Math.round(x * 255)));
  }

  async #referencesOf(concept: Concept): Promise<Features[]> {
    let features = this.#references.get(concept.name);
    if (!features) this.#references.set(concept.name, (features = await this.encoder.features(concept.images)));
    return features;
  }

  /** Identity for a subject, style for a style: what the model draws for the concept. */
  async concept(taught: Taught, weights: ArmWeights | undefined): Promise<Scored> {
    const references = await this.#referencesOf(taught.concept);
    if (taught.concept.kind === 'subject') {
      const samples = await this.generate(conceptPrompt(taught), weights, this.settings.images);
      const features = await this.encoder.features(samples);
      return { score: meanCosine(features.map((f) => f.identity), references.map((f) => f.identity)), samples };
    }
    const perSubject = Math.max(1, Math.round(this.settings.images / STYLE_PROMPT_SUBJECTS.length));
    const samples: Uint8Array[] = [];
    for (const subject of STYLE_PROMPT_SUBJECTS) samples.push(...(await this.generate(stylePrompt(subject, taught), weights, perSubject)));
    const features = await this.encoder.features(samples);
    return { score: meanCosine(features.map((f) => f.style), references.map((f) => f.style)), samples };
  }

  /** Prior integrity of a model (undefined: the base model itself, which the others are compared with). */
  async prior(weights: ArmWeights | undefined): Promise<Scored> {
    const samples: Uint8Array[] = [];
    for (const subject of PRIOR_SUBJECTS) samples.push(...(await this.generate(captionOf({ subject, style: '' }, false), weights, 2)));
    const features = await this.encoder.features(samples);
    this.#basePrior ??= weights ? undefined : features;
    if (!this.#basePrior) throw new Error('Scorer.prior: score the base model first');
    const base = this.#basePrior;
    return { score: features.reduce((sum, f, i) => sum + cosine(f.identity, base[i].identity), 0) / features.length, samples };
  }

  async composition(subject: Taught, style: Taught, weights: ArmWeights): Promise<Scored> {
    const samples = await this.generate(compositionPrompt(subject, style), weights, Math.max(1, this.settings.images / 2));
    const features = await this.encoder.features(samples);
    const identity = meanCosine(features.map((f) => f.identity), (await this.#referencesOf(subject.concept)).map((f) => f.identity));
    const look = meanCosine(features.map((f) => f.style), (await this.#referencesOf(style.concept)).map((f) => f.style));
    return { score: (identity + look) / 2, samples };
  }
}
