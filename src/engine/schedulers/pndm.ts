import { SchedulerConfigError, type SchedulerConfig } from './config';
import { alphasCumprod, roundHalfEven, spacedTimesteps } from './noise-schedule';
import { type Scheduler, requirePositiveSteps, requireSameLength, requireTimesteps, requireTrainTimestep } from './scheduler';

/**
 * PNDM's linear multistep part, PLMS (Liu et al. 2022), the sampler Stable Diffusion 1.x ships with
 * (`skip_prk_steps: true`). It is a 4th-order Adams-Bashforth method on the noise predictions; its first
 * step is a Heun-like pair, so the run evaluates the model twice at the first timestep:
 * timesteps are [t0, t1, t1, t2, ...] and step 2 returns to the sample of step 1.
 */
export class PndmScheduler implements Scheduler {
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  readonly alphasCumprod: Float64Array;
  private readonly finalAlphaCumprod: number;
  private stride = 0;
  /** Noise predictions of earlier steps, newest last (at most 4 kept). */
  private history: Float64Array[] = [];
  private counter = 0;
  private firstSample: Float64Array | undefined;

  constructor(private readonly config: SchedulerConfig) {
    if (!config.skip_prk_steps) {
      throw new SchedulerConfigError('pndm: only PLMS is supported, set skip_prk_steps: true (as Stable Diffusion ships it)');
    }
    if (config.rescale_betas_zero_snr) throw new SchedulerConfigError('pndm: diffusers has no rescale_betas_zero_snr for PNDM');
    if (config.prediction_type === 'sample') throw new SchedulerConfigError('pndm: prediction_type "sample" is not supported by diffusers either');
    this.alphasCumprod = alphasCumprod(config);
    this.finalAlphaCumprod = config.set_alpha_to_one ? 1 : this.alphasCumprod[0];
  }

  setTimesteps(numInferenceSteps: number): void {
    requirePositiveSteps(numInferenceSteps, this.config.num_train_timesteps);
    this.stride = Math.floor(this.config.num_train_timesteps / numInferenceSteps);
    const descending = spacedTimesteps(this.config, numInferenceSteps).map(roundHalfEven);
    // The second timestep is repeated: PLMS's warm-up evaluates it twice.
    this.timesteps = descending.length > 1 ? [descending[0], ...descending.slice(1, 2), ...descending.slice(1)] : descending;
    this.history = [];
    this.counter = 0;
    this.firstSample = undefined;
  }

  scaleModelInput(sample: Float64Array): Float64Array {
    return sample;
  }

  step(modelOutput: Float64Array, t: number, sample: Float64Array): Float64Array {
    requireTimesteps(this.timesteps);
    requireSameLength(modelOutput, sample);
    requireTrainTimestep(t, this.config.num_train_timesteps);
    let [from, to] = [t, t - this.stride];
    if (this.counter === 1) {
      // Second evaluation at the same timestep: redo step 1 from its starting sample with the averaged prediction.
      [from, to] = [t + this.stride, t];
    } else {
      this.history = [...this.history.slice(-3), modelOutput];
    }
    const e = this.history;
    const n = e.length;
    let prediction: Float64Array;
    let start = sample;
    if (n === 1 && this.counter === 0) {
      prediction = modelOutput;
      this.firstSample = sample;
    } else if (n === 1 && this.counter === 1) {
      prediction = modelOutput.map((m, i) => (m + e[0][i]) / 2);
      start = this.firstSample!;
      this.firstSample = undefined;
    } else if (n === 2) {
      prediction = e[1].map((_, i) => (3 * e[1][i] - e[0][i]) / 2);
    } else if (n === 3) {
      prediction = e[2].map((_, i) => (23 * e[2][i] - 16 * e[1][i] + 5 * e[0][i]) / 12);
    } else {
      prediction = e[3].map((_, i) => (1 / 24) * (55 * e[3][i] - 59 * e[2][i] + 37 * e[1][i] - 9 * e[0][i]));
    }
    this.counter++;
    return this.previousSample(start, from, to, prediction);
  }

  /** PNDM's transfer from ᾱ_t to ᾱ_prev along the predicted noise (its eq. 11). */
  private previousSample(sample: Float64Array, t: number, prevT: number, modelOutput: Float64Array): Float64Array {
    const alphaProd = this.alphasCumprod[t];
    const alphaProdPrev = prevT >= 0 ? this.alphasCumprod[prevT] : this.finalAlphaCumprod;
    const [betaProd, betaProdPrev] = [1 - alphaProd, 1 - alphaProdPrev];
    const sampleCoeff = Math.sqrt(alphaProdPrev / alphaProd);
    const denominator = alphaProd * Math.sqrt(betaProdPrev) + Math.sqrt(alphaProd * betaProd * alphaProdPrev);
    const [a, b] = [Math.sqrt(alphaProd), Math.sqrt(betaProd)];
    return sample.map((x, i) => {
      const eps = this.config.prediction_type === 'v_prediction' ? a * modelOutput[i] + b * x : modelOutput[i];
      return sampleCoeff * x - ((alphaProdPrev - alphaProd) * eps) / denominator;
    });
  }
}
