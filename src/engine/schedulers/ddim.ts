import type { Rng } from '../random';
import { SchedulerConfigError, type SchedulerConfig } from './config';
import { alphasCumprod, roundHalfEven, spacedTimesteps } from './noise-schedule';
import { type Scheduler, requirePositiveSteps, requireRng, requireSameLength, requireTimesteps, requireTrainTimestep } from './scheduler';

/**
 * The x0 and noise a model output implies at ᾱ_t, for the three prediction types (shared with DDPM):
 * epsilon predicts the noise, sample predicts x0, v_prediction predicts v = √ᾱ ε - √(1-ᾱ) x.
 */
export function predictOriginalAndNoise(
  config: SchedulerConfig,
  modelOutput: Float64Array,
  sample: Float64Array,
  alphaProd: number,
): { original: Float64Array; noise: Float64Array } {
  const [a, b] = [Math.sqrt(alphaProd), Math.sqrt(1 - alphaProd)];
  const original = new Float64Array(sample.length);
  const noise = new Float64Array(sample.length);
  for (let i = 0; i < sample.length; i++) {
    const [x, m] = [sample[i], modelOutput[i]];
    if (config.prediction_type === 'epsilon') [original[i], noise[i]] = [(x - b * m) / a, m];
    else if (config.prediction_type === 'sample') [original[i], noise[i]] = [m, (x - a * m) / b];
    else [original[i], noise[i]] = [a * x - b * m, a * m + b * x];
    if (config.clip_sample) {
      const r = config.clip_sample_range;
      original[i] = Math.min(Math.max(original[i], -r), r);
    }
  }
  return { original, noise };
}

/**
 * DDIM (Song et al. 2020). `eta` (diffusers' step argument, fixed per run here) scales the fresh noise:
 * 0 is the deterministic sampler Stable Diffusion pipelines use by default, 1 matches DDPM's variance.
 */
export class DdimScheduler implements Scheduler {
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  readonly alphasCumprod: Float64Array;
  /** ᾱ used past the end of the schedule: 1 or ᾱ_0 (`set_alpha_to_one`). */
  private readonly finalAlphaCumprod: number;
  private readonly eta: number;
  private numInferenceSteps = 0;

  constructor(
    private readonly config: SchedulerConfig,
    { eta = 0 }: { eta?: number } = {},
  ) {
    if (!(eta >= 0)) throw new SchedulerConfigError(`ddim: eta must be >= 0, got ${eta}`);
    this.eta = eta;
    this.alphasCumprod = alphasCumprod(config);
    this.finalAlphaCumprod = config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
  }

  setTimesteps(numInferenceSteps: number): void {
    requirePositiveSteps(numInferenceSteps, this.config.num_train_timesteps);
    this.numInferenceSteps = numInferenceSteps;
    this.timesteps = spacedTimesteps(this.config, numInferenceSteps).map(roundHalfEven);
  }

  scaleModelInput(sample: Float64Array): Float64Array {
    return sample;
  }

  step(modelOutput: Float64Array, t: number, sample: Float64Array, rng?: Rng): Float64Array {
    requireTimesteps(this.timesteps);
    requireSameLength(modelOutput, sample);
    requireTrainTimestep(t, this.config.num_train_timesteps);
    // diffusers steps back by T / n whatever the spacing, not to the next timestep of the run.
    const prevT = t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    const alphaProd = this.alphasCumprod[t];
    const alphaProdPrev = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    const { original, noise } = predictOriginalAndNoise(this.config, modelOutput, sample, alphaProd);
    // σ_t of the DDIM paper's eq. 16: eta times the DDPM posterior standard deviation.
    const variance = ((1 - alphaProdPrev) / (1 - alphaProd)) * (1 - alphaProd / alphaProdPrev);
    const std = this.eta * Math.sqrt(variance);
    const [a, b] = [Math.sqrt(alphaProdPrev), Math.sqrt(1 - alphaProdPrev - std * std)];
    const previous = original.map((x0, i) => a * x0 + b * noise[i]);
    if (this.eta === 0) return previous;
    const fresh = requireRng(rng, 'ddim with eta > 0').normal(sample.length);
    return previous.map((x, i) => x + std * fresh[i]);
  }
}
