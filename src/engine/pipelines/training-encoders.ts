import { Graph, serialize } from '../graph';
import { buildVaeEncoder } from '../models/vae';
import { type Rng } from '../random';
import { type EngineWorker, type SessionHandle } from '../runtime';
import { type TrainingPixels } from './images';
import { attachWeights, type StableDiffusionModels, textEncoderGraph } from './stable-diffusion';

/** The VAE's diagonal Gaussian over one image's latents, [latent_channels, h, w] each. */
export interface Posterior {
  mean: Float32Array;
  logvar: Float32Array;
}

/**
 * The frozen encoders of a training run: images to their VAE posterior (`vae.encode(x).latent_dist`), prompts
 * to the text encoder's last hidden state (cached by prompt). Sessions live until `close()`.
 */
export class TrainingEncoders {
  readonly #texts = new Map<string, Float32Array>();
  #vae: Promise<SessionHandle> | undefined;
  #text: Promise<SessionHandle> | undefined;

  constructor(readonly models: StableDiffusionModels, readonly worker: EngineWorker, readonly resolution: number) {}

  async posterior(pixels: TrainingPixels): Promise<Posterior> {
    this.#vae ??= this.#open(() => this.#vaeGraph());
    const { mean, logvar } = await this.worker.run(await this.#vae, {
      image: { dtype: 'float32', dims: [1, 3, this.resolution, this.resolution], data: pixels.data.slice() },
    });
    return { mean: mean.data as Float32Array, logvar: logvar.data as Float32Array };
  }

  /** `latent_dist.sample() * scaling_factor`, the sample drawn from `rng`, as diffusers' scripts draw one every step. */
  sample({ mean, logvar }: Posterior, rng: Rng): Float32Array {
    const eps = rng.normal(mean.length);
    const scale = this.models.vae.config.scaling_factor;
    return Float32Array.from(mean, (mu, i) => (mu + Math.exp(0.5 * logvar[i]) * eps[i]) * scale);
  }

  /** [tokens, hidden] for a prompt, padded to the tokenizer's max length as diffusers' DreamBooth scripts do. */
  async text(prompt: string): Promise<Float32Array> {
    const cached = this.#texts.get(prompt);
    if (cached) return cached;
    const { tokenizer } = this.models;
    this.#text ??= this.#open(() => textEncoderGraph(this.models, 1, this.models.tokenizer.maxLength));
    const { last_hidden_state: states } = await this.worker.run(await this.#text, {
      input_ids: { dtype: 'int64', dims: [1, tokenizer.maxLength], data: BigInt64Array.from(tokenizer.encodePadded(prompt), BigInt) },
    });
    this.#texts.set(prompt, states.data as Float32Array);
    return states.data as Float32Array;
  }

  async close(): Promise<void> {
    for (const session of await Promise.allSettled([this.#vae, this.#text].filter((s) => s !== undefined))) {
      if (session.status === 'fulfilled') await this.worker.release(session.value);
    }
    this.#vae = this.#text = undefined;
  }

  async #open(build: () => Graph): Promise<SessionHandle> {
    return this.worker.createSession(serialize(build()));
  }

  #vaeGraph(): Graph {
    const { config, weights } = this.models.vae;
    const g = new Graph('vae_encoder');
    const { mean, logvar } = buildVaeEncoder(g, config, g.input('image', 'float32', [1, config.in_channels, this.resolution, this.resolution]));
    g.output(mean, 'mean');
    g.output(logvar, 'logvar');
    attachWeights(g, weights);
    return g;
  }
}
