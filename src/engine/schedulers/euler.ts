import type { SchedulerConfig } from './config';
import { SigmaSchedulerBase } from './sigma-scheduler';

/** Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without churn). */
export class EulerScheduler extends SigmaSchedulerBase {
  constructor(config: SchedulerConfig) {
    super(config, { karras: config.use_karras_sigmas === true, finalSigma: config.final_sigmas_type });
  }

  protected integrate(sample: Float64Array, derivative: Float64Array, index: number): Float64Array {
    const dt = this.sigmas[index + 1] - this.sigmas[index];
    return sample.map((x, i) => x + derivative[i] * dt);
  }
}
