import type { Rng } from '../random';
import type { SchedulerConfig } from './config';
import { alphasCumprod, interpolate, karrasSchedule, sigmaTable, spacedTimesteps } from './noise-schedule';
import { type SigmaScheduler, requirePositiveSteps, requireSameLength, requireTimesteps, stepIndexFor } from './scheduler';

const f32 = Math.fround;

/**
 * The shared half of the k-diffusion samplers (Euler, Euler ancestral, LMS): latents live at noise level
 * σ (x = x0 + σ ε), the model sees x / sqrt(σ² + 1), and each step moves from sigmas[i] to sigmas[i + 1].
 */
export abstract class SigmaSchedulerBase implements SigmaScheduler {
  timesteps: number[] = [];
  sigmas: number[] = [];
  readonly alphasCumprod: Float64Array;
  /** Position in the run, found from the first timestep seen (diffusers' `_init_step_index`). */
  protected stepIndex: number | undefined;

  constructor(
    protected readonly config: SchedulerConfig,
    private readonly schedule: { karras: boolean; finalSigma: 'zero' | 'sigma_min' },
  ) {
    this.alphasCumprod = alphasCumprod(config, { zeroSnrFloor: true });
  }

  get initNoiseSigma(): number {
    requireTimesteps(this.timesteps);
    const max = Math.max(...this.sigmas);
    return this.config.timestep_spacing === 'leading' ? f32(Math.sqrt(max * max + 1)) : max;
  }

  setTimesteps(numInferenceSteps: number): void {
    requirePositiveSteps(numInferenceSteps, this.config.num_train_timesteps);
    const table = sigmaTable(this.alphasCumprod);
    let timesteps = spacedTimesteps(this.config, numInferenceSteps).map(f32);
    let sigmas = timesteps.map((t) => interpolate(table, t));
    if (this.schedule.karras) {
      const karras = karrasSchedule(table, this.config.sigma_min ?? sigmas.at(-1)!, this.config.sigma_max ?? sigmas[0], numInferenceSteps);
      sigmas = karras.sigmas;
      timesteps = karras.timesteps.map(f32);
    }
    this.timesteps = timesteps;
    this.sigmas = [...sigmas, this.schedule.finalSigma === 'zero' ? 0 : table[0]].map(f32);
    this.stepIndex = undefined;
    this.onSetTimesteps();
  }

  scaleModelInput(sample: Float64Array, t: number): Float64Array {
    const sigma = this.sigmas[this.indexAt(t)];
    const scale = 1 / Math.sqrt(sigma * sigma + 1);
    return sample.map((x) => x * scale);
  }

  step(modelOutput: Float64Array, t: number, sample: Float64Array, rng?: Rng): Float64Array {
    requireSameLength(modelOutput, sample);
    const index = this.indexAt(t);
    const sigma = this.sigmas[index];
    const original = this.predictOriginal(modelOutput, sample, sigma);
    const derivative = sample.map((x, i) => (x - original[i]) / sigma);
    const previous = this.integrate(sample, derivative, index, rng);
    this.stepIndex = index + 1;
    return previous;
  }

  /** Moves `sample` from sigmas[index] to sigmas[index + 1] given dx/dσ at the current point. */
  protected abstract integrate(sample: Float64Array, derivative: Float64Array, index: number, rng?: Rng): Float64Array;

  /** Clears a sampler's history when a new run starts. */
  protected onSetTimesteps(): void {}

  private indexAt(t: number): number {
    this.stepIndex = stepIndexFor(this.timesteps, this.stepIndex, t);
    return this.stepIndex;
  }

  private predictOriginal(modelOutput: Float64Array, sample: Float64Array, sigma: number): Float64Array {
    switch (this.config.prediction_type) {
      case 'epsilon':
        return sample.map((x, i) => x - sigma * modelOutput[i]);
      case 'v_prediction': {
        const c = -sigma / Math.sqrt(sigma * sigma + 1);
        return sample.map((x, i) => modelOutput[i] * c + x / (sigma * sigma + 1));
      }
      case 'sample':
        return modelOutput;
    }
  }
}
