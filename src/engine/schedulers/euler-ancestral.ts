import type { Rng } from '../random';
import { SchedulerConfigError, type SchedulerConfig } from './config';
import { requireRng } from './scheduler';
import { SigmaSchedulerBase } from './sigma-scheduler';

/**
 * Euler ancestral: an Euler step down to σ_down, then fresh noise of σ_up, with σ_down² + σ_up² = σ_next²
 * (k-diffusion's `sample_euler_ancestral`, eta 1). Draws one standard normal per latent value per step.
 */
export class EulerAncestralScheduler extends SigmaSchedulerBase {
  constructor(config: SchedulerConfig) {
    if (config.prediction_type === 'sample') {
      throw new SchedulerConfigError('euler_ancestral: prediction_type "sample" is not supported by diffusers either');
    }
    super(config, { karras: false, finalSigma: 'zero' });
  }

  protected integrate(sample: Float64Array, derivative: Float64Array, index: number, rng?: Rng): Float64Array {
    const noise = requireRng(rng, 'euler_ancestral').normal(sample.length);
    const [from, to] = [this.sigmas[index], this.sigmas[index + 1]];
    const up = Math.sqrt((to * to * (from * from - to * to)) / (from * from));
    const down = Math.sqrt(to * to - up * up);
    const dt = down - from;
    return sample.map((x, i) => x + derivative[i] * dt + noise[i] * up);
  }
}
