import { SchedulerConfigError, type SchedulerConfig } from './config';
import {
  alphasCumprod,
  arange,
  interpolate,
  karrasSchedule,
  linspace,
  roundHalfEven,
  sigmaTable,
} from './noise-schedule';
import {
  type SigmaScheduler,
  requirePositiveSteps,
  requireSameLength,
  stepIndexFor,
} from './scheduler';

const f32 = Math.fround;

/**
 * DPM-Solver++ multistep (Lu et al. 2022), "DPM++ 2M" at the default solver_order 2: an exponential
 * integrator in λ = log(α/σ) on the data prediction x0, using the x0 of the last `solver_order` steps.
 * Only the deterministic `dpmsolver++` algorithm is supported.
 */
export class DpmSolverMultistepScheduler implements SigmaScheduler {
  readonly initNoiseSigma = 1;
  timesteps: number[] = [];
  sigmas: number[] = [];
  readonly alphasCumprod: Float64Array;
  private stepIndex: number | undefined;
  /** x0 predictions of the last steps, newest last. */
  private outputs: Float64Array[] = [];
  private lowerOrderSteps = 0;

  constructor(private readonly config: SchedulerConfig) {
    if (config.algorithm_type !== 'dpmsolver++') {
      throw new SchedulerConfigError(`dpmpp_2m: algorithm_type must be "dpmsolver++", got ${JSON.stringify(config.algorithm_type)}`);
    }
    if (config.variance_type !== null) throw new SchedulerConfigError('dpmpp_2m: learned variance_type is not supported');
    this.alphasCumprod = alphasCumprod(config, { zeroSnrFloor: true });
  }

  setTimesteps(numInferenceSteps: number): void {
    const config = this.config;
    const T = config.num_train_timesteps;
    requirePositiveSteps(numInferenceSteps, T);
    const table = sigmaTable(this.alphasCumprod);
    // λ_t decreases with t; timesteps whose λ falls below lambda_min_clipped are cut from the top.
    const lambdas = this.alphasCumprod.map((a) => f32(Math.log(f32(Math.sqrt(a))) - Math.log(f32(Math.sqrt(f32(1 - a))))));
    const clipped = lambdas.filter((lambda) => lambda < config.lambda_min_clipped).length;
    const last = T - clipped;
    let timesteps: number[];
    const n = numInferenceSteps;
    if (config.timestep_spacing === 'linspace') {
      timesteps = linspace(0, last - 1, n + 1).map(roundHalfEven).reverse().slice(0, -1);
    } else if (config.timestep_spacing === 'leading') {
      const ratio = Math.floor(last / (n + 1));
      timesteps = Array.from({ length: n }, (_, i) => (n - i) * ratio + config.steps_offset);
    } else {
      timesteps = arange(last, 0, -T / n).map((t) => roundHalfEven(t) - 1);
    }
    let sigmas = timesteps.map((t) => interpolate(table, t));
    if (config.use_karras_sigmas) {
      ({ sigmas, timesteps } = karrasSchedule(table, config.sigma_min ?? table[0], config.sigma_max ?? table[T - 1], n));
      if (config.beta_schedule !== 'squaredcos_cap_v2') timesteps = timesteps.map(roundHalfEven);
      timesteps = timesteps.map(Math.trunc);
    }
    this.timesteps = timesteps;
    this.sigmas = [...sigmas, config.final_sigmas_type === 'zero' ? 0 : table[0]].map(f32);
    this.stepIndex = undefined;
    this.outputs = [];
    this.lowerOrderSteps = 0;
  }

  scaleModelInput(sample: Float64Array): Float64Array {
    return sample;
  }

  step(modelOutput: Float64Array, t: number, sample: Float64Array): Float64Array {
    const index = stepIndexFor(this.timesteps, this.stepIndex, t);
    requireSameLength(modelOutput, sample);
    const { solver_order: order, lower_order_final: lowerOrderFinal, euler_at_final: eulerAtFinal } = this.config;
    const steps = this.timesteps.length;
    const finalFirstOrder =
      index === steps - 1 && (eulerAtFinal || (lowerOrderFinal && steps < 15) || this.config.final_sigmas_type === 'zero');
    const finalSecondOrder = index === steps - 2 && lowerOrderFinal && steps < 15;

    this.outputs = [...this.outputs, this.dataPrediction(modelOutput, sample, this.sigmas[index])].slice(-order);
    let previous: Float64Array;
    if (order === 1 || this.lowerOrderSteps < 1 || finalFirstOrder) previous = this.firstOrder(sample, index);
    else if (order === 2 || this.lowerOrderSteps < 2 || finalSecondOrder) previous = this.secondOrder(sample, index);
    else previous = this.thirdOrder(sample, index);
    if (this.lowerOrderSteps < order) this.lowerOrderSteps++;
    this.stepIndex = index + 1;
    return previous;
  }

  /** α_t, σ_t and λ_t of the VP process at k-diffusion noise level s: α = 1/sqrt(s²+1), σ = s α. */
  private lambdaAt(index: number): { alpha: number; sigma: number; lambda: number } {
    const s = this.sigmas[index];
    const alpha = 1 / Math.sqrt(s * s + 1);
    const sigma = s * alpha;
    return { alpha, sigma, lambda: Math.log(alpha) - Math.log(sigma) };
  }

  private dataPrediction(modelOutput: Float64Array, sample: Float64Array, s: number): Float64Array {
    const alpha = 1 / Math.sqrt(s * s + 1);
    const sigma = s * alpha;
    switch (this.config.prediction_type) {
      case 'epsilon':
        return sample.map((x, i) => (x - sigma * modelOutput[i]) / alpha);
      case 'sample':
        return modelOutput;
      case 'v_prediction':
        return sample.map((x, i) => alpha * x - sigma * modelOutput[i]);
    }
  }

  private firstOrder(sample: Float64Array, index: number): Float64Array {
    const t = this.lambdaAt(index + 1);
    const s = this.lambdaAt(index);
    const h = t.lambda - s.lambda;
    const [a, b] = [t.sigma / s.sigma, t.alpha * (Math.exp(-h) - 1)];
    const m0 = this.outputs.at(-1)!;
    return sample.map((x, i) => a * x - b * m0[i]);
  }

  private secondOrder(sample: Float64Array, index: number): Float64Array {
    const t = this.lambdaAt(index + 1);
    const s0 = this.lambdaAt(index);
    const s1 = this.lambdaAt(index - 1);
    const [h, h0] = [t.lambda - s0.lambda, s0.lambda - s1.lambda];
    const r0 = h0 / h;
    const [m0, m1] = [this.outputs.at(-1)!, this.outputs.at(-2)!];
    const ratio = t.sigma / s0.sigma;
    const c0 = t.alpha * (Math.exp(-h) - 1);
    // midpoint: x0 extrapolated half-way; heun: the exact integral of the linear term.
    const c1 = this.config.solver_type === 'midpoint' ? -0.5 * c0 : t.alpha * ((Math.exp(-h) - 1) / h + 1);
    return sample.map((x, i) => {
      const d1 = (m0[i] - m1[i]) / r0;
      return ratio * x - c0 * m0[i] + c1 * d1;
    });
  }

  private thirdOrder(sample: Float64Array, index: number): Float64Array {
    const t = this.lambdaAt(index + 1);
    const s0 = this.lambdaAt(index);
    const s1 = this.lambdaAt(index - 1);
    const s2 = this.lambdaAt(index - 2);
    const [h, h0, h1] = [t.lambda - s0.lambda, s0.lambda - s1.lambda, s1.lambda - s2.lambda];
    const [r0, r1] = [h0 / h, h1 / h];
    const [m0, m1, m2] = [this.outputs.at(-1)!, this.outputs.at(-2)!, this.outputs.at(-3)!];
    const ratio = t.sigma / s0.sigma;
    const em1 = Math.exp(-h) - 1;
    const [c0, c1, c2] = [t.alpha * em1, t.alpha * (em1 / h + 1), t.alpha * ((em1 + h) / (h * h) - 0.5)];
    return sample.map((x, i) => {
      const d10 = (m0[i] - m1[i]) / r0;
      const d11 = (m1[i] - m2[i]) / r1;
      const d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11);
      const d2 = (d10 - d11) / (r0 + r1);
      return ratio * x - c0 * m0[i] + c1 * d1 - c2 * d2;
    });
  }
}
