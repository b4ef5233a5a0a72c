import type { Rng } from '../random';
import { SchedulerConfigError, type SchedulerConfig } from './config';
import { predictOriginalAndNoise } from './ddim';
import { alphasCumprod, roundHalfEven, spacedTimesteps } from './noise-schedule';
import {
  type Scheduler,
  SchedulerUsageError,
  requirePositiveSteps,
  requireRng,
  requireSameLength,
  requireTimesteps,
  requireTrainTimestep,
} from './scheduler';

/**
 * DDPM (Ho et al. 2020): the forward process that training samples from (`addNoise`) and its ancestral
 * reverse step, which draws fresh noise of the posterior variance at every t > 0.
 */
export class DdpmScheduler implements Scheduler {
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  readonly alphasCumprod: Float64Array;

  constructor(private readonly config: SchedulerConfig) {
    if (config.variance_type !== 'fixed_small' && config.variance_type !== 'fixed_large') {
      throw new SchedulerConfigError(`ddpm: variance_type must be "fixed_small" or "fixed_large", got ${JSON.stringify(config.variance_type)}`);
    }
    this.alphasCumprod = alphasCumprod(config);
  }

  /** x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε for a batch laid out [batch, ...]: one timestep per batch row. */
  addNoise(original: Float64Array, noise: Float64Array, timesteps: number[]): Float64Array {
    return this.mixPerRow(original, noise, timesteps, (alphaProd) => [Math.sqrt(alphaProd), Math.sqrt(1 - alphaProd)]);
  }

  /** The v-prediction training target v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x0 (Salimans & Ho 2022), batched like addNoise. */
  getVelocity(original: Float64Array, noise: Float64Array, timesteps: number[]): Float64Array {
    return this.mixPerRow(noise, original, timesteps, (alphaProd) => [Math.sqrt(alphaProd), -Math.sqrt(1 - alphaProd)]);
  }

  setTimesteps(numInferenceSteps: number): void {
    requirePositiveSteps(numInferenceSteps, this.config.num_train_timesteps);
    this.timesteps = spacedTimesteps(this.config, numInferenceSteps).map(roundHalfEven);
  }

  scaleModelInput(sample: Float64Array): Float64Array {
    return sample;
  }

  /** a x + b y per batch row, with (a, b) from that row's ᾱ_t. */
  private mixPerRow(
    x: Float64Array,
    y: Float64Array,
    timesteps: number[],
    coefficients: (alphaProd: number) => [number, number],
  ): Float64Array {
    requireSameLength(x, y);
    if (timesteps.length === 0 || x.length % timesteps.length !== 0) {
      throw new SchedulerUsageError(`${x.length} values do not split into ${timesteps.length} batch rows`);
    }
    const rowLength = x.length / timesteps.length;
    const out = new Float64Array(x.length);
    timesteps.forEach((t, row) => {
      requireTrainTimestep(t, this.config.num_train_timesteps);
      const [a, b] = coefficients(this.alphasCumprod[t]);
      for (let i = row * rowLength; i < (row + 1) * rowLength; i++) out[i] = a * x[i] + b * y[i];
    });
    return out;
  }

  step(modelOutput: Float64Array, t: number, sample: Float64Array, rng?: Rng): Float64Array {
    requireTimesteps(this.timesteps);
    requireSameLength(modelOutput, sample);
    const index = this.timesteps.indexOf(t);
    if (index < 0) throw new SchedulerUsageError(`timestep ${t} is not in this run's timesteps`);
    const prevT = index === this.timesteps.length - 1 ? -1 : this.timesteps[index + 1];
    const alphaProd = this.alphasCumprod[t];
    const alphaProdPrev = prevT >= 0 ? this.alphasCumprod[prevT] : 1;
    const [betaProd, betaProdPrev] = [1 - alphaProd, 1 - alphaProdPrev];
    const currentAlpha = alphaProd / alphaProdPrev;
    const currentBeta = 1 - currentAlpha;
    const { original } = predictOriginalAndNoise(this.config, modelOutput, sample, alphaProd);
    // Posterior mean of q(x_prev | x_t, x0), Ho et al. eq. 7.
    const originalCoeff = (Math.sqrt(alphaProdPrev) * currentBeta) / betaProd;
    const sampleCoeff = (Math.sqrt(currentAlpha) * betaProdPrev) / betaProd;
    const mean = original.map((x0, i) => originalCoeff * x0 + sampleCoeff * sample[i]);
    if (t === 0) return mean;
    const variance =
      this.config.variance_type === 'fixed_small' ? Math.max((betaProdPrev / betaProd) * currentBeta, 1e-20) : currentBeta;
    const std = Math.sqrt(variance);
    const noise = requireRng(rng, 'ddpm').normal(sample.length);
    return mean.map((m, i) => m + std * noise[i]);
  }
}
