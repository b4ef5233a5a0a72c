import { type Rng } from '../random';
import { cropOrigin, type TrainingPicture, trainingPixels, type TrainingView } from './images';
import { type Posterior, type TrainingEncoders } from './training-encoders';

/** One training image and the prompt it is trained with. */
export interface Example {
  /**
   * The image as `loadTrainingPicture` loads it at the training resolution. Called whenever a step needs a
   * view of it that is not cached, so a run holds no image it is not encoding (1,500 prior images would be
   * gigabytes of pixels); return a kept picture when loading is costly.
   */
  image: () => Promise<TrainingPicture>;
  prompt: string;
}

export interface BatchOptions {
  resolution: number;
  /** Examples of each set per step. */
  perStep: number;
  crop: 'random' | 'center';
  flip: boolean;
  /** The seeded orders each set's examples cycle through. */
  order: { instance: number[]; prior: number[] };
}

/** A step's rows in latent space: instances first, then as many prior rows (when there are prior examples). */
export interface LatentRows {
  latents: Float32Array;
  encoderHiddenStates: Float32Array;
  rows: number;
}

/** Posteriors kept for views seen before; past this they are encoded again, which gives the same bits. */
const POSTERIOR_CACHE_BYTES = 2 ** 30;

type ExampleSet = 'instance' | 'prior';

/**
 * The rows of each training step, as diffusers' DreamBooth scripts make them: every step draws each row's view
 * (random crop, flip) and a fresh sample of its VAE posterior. Posteriors are cached by view (an image of the
 * training size has one crop, so two views at most), most recently used first; images load only to encode a
 * view not in the cache.
 */
export class TrainingBatches {
  readonly #posteriors = new Map<string, Posterior>();
  #cachedBytes = 0;
  /** Each picture's size, known once it has been loaded: a view's crop needs it. */
  readonly #sizes = new Map<string, Pick<TrainingPicture, 'width' | 'height'>>();

  constructor(
    private readonly encoders: TrainingEncoders,
    private readonly examples: Record<ExampleSet, readonly Example[]>,
    private readonly options: BatchOptions,
  ) {}

  /**
   * Step `step`'s rows. Draws from `rng`, in this order: each row's view (a crop uniform when cropping at
   * random, then a flip uniform when flipping), then each row's posterior sample.
   */
  async rows(step: number, rng: Rng): Promise<LatentRows> {
    const { perStep, crop, flip, order } = this.options;
    const first = step * perStep;
    const picks: [ExampleSet, number][] = [];
    for (const set of ['instance', 'prior'] as const) {
      const { length } = this.examples[set];
      if (length) for (let b = 0; b < perStep; b++) picks.push([set, order[set][(first + b) % length]]);
    }
    const views = picks.map((): TrainingView => ({ crop: crop === 'random' ? rng.nextUniform() : 'center', flip: flip && rng.nextUniform() < 0.5 }));
    const latents: Float32Array[] = [];
    const states: Float32Array[] = [];
    for (const [i, [set, index]] of picks.entries()) {
      latents.push(this.encoders.sample(await this.#posterior(set, index, views[i]), rng));
      states.push(await this.encoders.text(this.examples[set][index].prompt));
    }
    return { latents: concatRows(latents), encoderHiddenStates: concatRows(states), rows: picks.length };
  }

  async #posterior(set: ExampleSet, index: number, view: TrainingView): Promise<Posterior> {
    const { resolution } = this.options;
    const name = `${set}.${index}`;
    let picture: TrainingPicture | undefined;
    let size = this.#sizes.get(name);
    if (!size) {
      picture = await this.examples[set][index].image();
      size = { width: picture.width, height: picture.height };
      this.#sizes.set(name, size);
    }
    const key = `${name}@${cropOrigin(size, resolution, view).join(',')}${view.flip ? ' flipped' : ''}`;
    const cached = this.#posteriors.get(key);
    if (cached) {
      this.#posteriors.delete(key);
      this.#posteriors.set(key, cached);
      return cached;
    }
    picture ??= await this.examples[set][index].image();
    const posterior = await this.encoders.posterior(trainingPixels(picture, resolution, view));
    this.#posteriors.set(key, posterior);
    this.#cachedBytes += posterior.mean.byteLength + posterior.logvar.byteLength;
    for (const [oldest, { mean, logvar }] of this.#posteriors) {
      if (this.#cachedBytes <= POSTERIOR_CACHE_BYTES) break;
      this.#posteriors.delete(oldest);
      this.#cachedBytes -= mean.byteLength + logvar.byteLength;
    }
    return posterior;
  }
}

function concatRows(rows: Float32Array[]): Float32Array {
  const out = new Float32Array(rows.reduce((n, row) => n + row.length, 0));
  let offset = 0;
  for (const row of rows) {
    out.set(row, offset);
    offset += row.length;
  }
  return out;
}
