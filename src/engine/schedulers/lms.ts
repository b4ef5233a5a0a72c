import { SchedulerConfigError, type SchedulerConfig } from './config';
import { SigmaSchedulerBase } from './sigma-scheduler';

const ORDER = 4;

/** 4-point Gauss-Legendre nodes and weights on [-1, 1]: exact for polynomials up to degree 7. */
const GAUSS_NODES = [-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526];
const GAUSS_WEIGHTS = [0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538];

/**
 * Linear multistep (Adams-Bashforth in σ, Karras et al. 2022 / k-diffusion `sample_lms`): the derivative
 * is extrapolated through the last `order` derivatives with Lagrange polynomials, whose integrals over
 * [σ_i, σ_i+1] are the step's coefficients. diffusers integrates them with scipy's `quad`; the integrand
 * is a polynomial of degree < 4, which 4-point Gauss-Legendre integrates exactly.
 */
export class LmsScheduler extends SigmaSchedulerBase {
  /** dx/dσ of earlier steps, oldest first, at most ORDER kept. */
  private derivatives: Float64Array[] = [];

  constructor(config: SchedulerConfig) {
    if (config.rescale_betas_zero_snr) throw new SchedulerConfigError('lms: diffusers has no rescale_betas_zero_snr for LMS');
    // diffusers' LMS has no sigma_min / sigma_max: its Karras range is always that of the run.
    super({ ...config, sigma_min: null, sigma_max: null }, { karras: config.use_karras_sigmas === true, finalSigma: 'zero' });
  }

  protected override onSetTimesteps(): void {
    this.derivatives = [];
  }

  protected integrate(sample: Float64Array, derivative: Float64Array, index: number): Float64Array {
    this.derivatives = [...this.derivatives, derivative].slice(-ORDER);
    const order = Math.min(index + 1, ORDER);
    const next = sample.slice();
    for (let k = 0; k < order; k++) {
      const coefficient = this.lmsCoefficient(order, index, k);
      const d = this.derivatives[this.derivatives.length - 1 - k];
      for (let i = 0; i < next.length; i++) next[i] += coefficient * d[i];
    }
    return next;
  }

  /** ∫ over [σ_t, σ_t+1] of the Lagrange basis polynomial that is 1 at σ_(t-j) and 0 at the other nodes. */
  lmsCoefficient(order: number, t: number, j: number): number {
    const s = this.sigmas;
    const basis = (tau: number) => {
      let product = 1;
      for (let k = 0; k < order; k++) if (k !== j) product *= (tau - s[t - k]) / (s[t - j] - s[t - k]);
      return product;
    };
    const [a, b] = [s[t], s[t + 1]];
    const [mid, half] = [(a + b) / 2, (b - a) / 2];
    return half * GAUSS_NODES.reduce((sum, x, i) => sum + GAUSS_WEIGHTS[i] * basis(mid + half * x), 0);
  }
}
