import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/engine/random';
import {
  SCHEDULER_NAMES,
  SchedulerConfigError,
  SchedulerUsageError,
  createScheduler,
  parseSchedulerConfigJson,
  type Scheduler,
  type SchedulerName,
  type SigmaScheduler,
} from '../../src/engine/schedulers';
import { type StoredTensor, toFloat32, toIntegers } from '../../src/engine/weights/safetensors';
import { hasFixtures, loadReference, relativeL2 } from '../helpers/fixtures';

/** The fixtures' tolerance for a single float64 computation stored as float32. */
const PARITY = 1e-4;
const SIGMA_RTOL = 1e-6;
/** Samplers that draw noise every step: the fixtures have no rollout for them. */
const STOCHASTIC: SchedulerName[] = ['euler_ancestral', 'ddpm'];

const SD_CONFIG = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  steps_offset: 1,
  skip_prk_steps: true,
  clip_sample: false,
  set_alpha_to_one: false,
};

const f64 = (tensor: StoredTensor | undefined) => Float64Array.from(toFloat32(tensor!));

function expectClose(actual: number[], expected: number[], rtol: number): void {
  expect(actual).toHaveLength(expected.length);
  expected.forEach((e, i) => {
    if (e === 0) expect(actual[i]).toBe(0);
    else expect(Math.abs(actual[i] / e - 1), `index ${i}: ${actual[i]} vs ${e}`).toBeLessThan(rtol);
  });
}

/** The fixtures' rollout: x = noise0 * init_noise_sigma; model_output = noise[i] + 0.1 * scale_model_input(x, t). */
function rollout(scheduler: Scheduler, noise0: Float64Array, noise: Float64Array): Float64Array {
  const n = noise0.length;
  let x: Float64Array = noise0.map((v) => v * scheduler.initNoiseSigma);
  scheduler.timesteps.forEach((t, i) => {
    const scaled = scheduler.scaleModelInput(x, t);
    const modelOutput = noise.subarray(i * n, (i + 1) * n).map((v, j) => v + 0.1 * scaled[j]);
    x = scheduler.step(modelOutput, t, x);
  });
  return x;
}

describe.skipIf(!hasFixtures)('schedulers against diffusers', () => {
  let reference: any;
  let tensors: Map<string, StoredTensor>;
  beforeAll(async () => {
    ({ json: { schedulers: reference }, tensors } = await loadReference());
  });

  for (const name of SCHEDULER_NAMES) {
    for (const steps of [10, 25]) {
      it(`${name}, ${steps} steps: timesteps, sigmas and init_noise_sigma`, () => {
        const expected = reference[name][`steps_${steps}`];
        const scheduler = createScheduler(name, reference[name].config);
        scheduler.setTimesteps(steps);
        // The fixture lists timesteps as Python ints; Euler-family ones are fractional float32 values.
        expect(scheduler.timesteps.map(Math.trunc)).toEqual(expected.timesteps);
        expectClose([scheduler.initNoiseSigma], [expected.init_noise_sigma], SIGMA_RTOL);
        // diffusers' float32 sigma tables are reproduced bit for bit.
        if (expected.sigmas) expect((scheduler as SigmaScheduler).sigmas).toEqual(expected.sigmas);
      });

      const key = `sched.${name}.${steps}`;
      if (STOCHASTIC.includes(name)) continue;
      it(`${name}, ${steps} steps: rollout matches ${key}.final`, () => {
        const scheduler = createScheduler(name, reference[name].config);
        scheduler.setTimesteps(steps);
        const final = rollout(scheduler, f64(tensors.get(`${key}.noise0`)), f64(tensors.get(`${key}.noise`)));
        expect(relativeL2(final, toFloat32(tensors.get(`${key}.final`)!))).toBeLessThan(PARITY);
      });
    }
  }

  it('DDPM forward process: alphas_cumprod and add_noise', () => {
    const ddpm = createScheduler('ddpm', reference.ddpm.config);
    expect(Array.from(ddpm.alphasCumprod)).toEqual(Array.from(toFloat32(tensors.get('ddpm.alphas_cumprod')!)));
    const noisy = ddpm.addNoise(
      f64(tensors.get('ddpm.add_noise.x0')),
      f64(tensors.get('ddpm.add_noise.noise')),
      toIntegers(tensors.get('ddpm.add_noise.t')!),
    );
    expect(relativeL2(noisy, toFloat32(tensors.get('ddpm.add_noise.out')!))).toBeLessThan(PARITY);
  });
});

/** numpy's round: ties to even. */
const roundTiesEven = (x: number) => {
  const floor = Math.floor(x);
  if (x - floor !== 0.5) return Math.round(x);
  return floor % 2 === 0 ? floor : floor + 1;
};

describe('timestep spacing, from diffusers formulas', () => {
  const T = 1000;

  it('trailing starts at T-1 and steps back by T/n, rounded to even (DDIM, DDPM, Euler, LMS, DPM)', () => {
    for (const n of [3, 7, 16]) {
      const expected = Array.from({ length: n }, (_, k) => roundTiesEven(T - (k * T) / n) - 1);
      for (const name of ['ddim', 'ddpm', 'euler', 'lms', 'dpmpp_2m'] as const) {
        const scheduler = createScheduler(name, { ...SD_CONFIG, timestep_spacing: 'trailing' });
        scheduler.setTimesteps(n);
        expect(scheduler.timesteps, `${name} n=${n}`).toEqual(expected);
      }
    }
  });

  it('linspace spans [0, T-1]: rounded for DDIM/DDPM, fractional float32 for Euler/LMS, n+1 points for DPM', () => {
    for (const n of [7, 16]) {
      const points = Array.from({ length: n }, (_, k) => ((n - 1 - k) * (T - 1)) / (n - 1));
      for (const name of ['ddim', 'ddpm'] as const) {
        const scheduler = createScheduler(name, { ...SD_CONFIG, timestep_spacing: 'linspace' });
        scheduler.setTimesteps(n);
        expect(scheduler.timesteps).toEqual(points.map(roundTiesEven));
      }
      for (const name of ['euler', 'euler_ancestral', 'lms'] as const) {
        const scheduler = createScheduler(name, { ...SD_CONFIG, timestep_spacing: 'linspace' });
        scheduler.setTimesteps(n);
        expectClose(scheduler.timesteps, points, 1e-7);
        expect(scheduler.timesteps[0]).toBe(T - 1);
      }
      const dpm = createScheduler('dpmpp_2m', { ...SD_CONFIG, timestep_spacing: 'linspace' });
      dpm.setTimesteps(n);
      expect(dpm.timesteps).toEqual(Array.from({ length: n }, (_, k) => roundTiesEven(((n - k) * (T - 1)) / n)));
    }
  });

  it('leading takes multiples of floor(T/n) plus steps_offset; PNDM repeats its second timestep', () => {
    for (const n of [7, 16]) {
      const stride = Math.floor(T / n);
      const expected = Array.from({ length: n }, (_, k) => (n - 1 - k) * stride + 1);
      for (const name of ['ddim', 'ddpm', 'euler', 'lms'] as const) {
        const scheduler = createScheduler(name, { ...SD_CONFIG, timestep_spacing: 'leading' });
        scheduler.setTimesteps(n);
        expect(scheduler.timesteps).toEqual(expected);
      }
      const pndm = createScheduler('pndm', { ...SD_CONFIG, timestep_spacing: 'leading' });
      pndm.setTimesteps(n);
      expect(pndm.timesteps).toEqual([expected[0], expected[1], ...expected.slice(1)]);
      const dpmStride = Math.floor(T / (n + 1));
      const dpm = createScheduler('dpmpp_2m', { ...SD_CONFIG, timestep_spacing: 'leading' });
      dpm.setTimesteps(n);
      expect(dpm.timesteps).toEqual(Array.from({ length: n }, (_, k) => (n - k) * dpmStride + 1));
    }
  });

  it('Euler-family init_noise_sigma is the top sigma, or sqrt(sigma^2 + 1) under leading spacing', () => {
    for (const spacing of ['linspace', 'trailing', 'leading']) {
      const euler = createScheduler('euler', { ...SD_CONFIG, timestep_spacing: spacing });
      euler.setTimesteps(10);
      const top = euler.sigmas[0];
      const expected = spacing === 'leading' ? Math.sqrt(top * top + 1) : top;
      expect(Math.abs(euler.initNoiseSigma / expected - 1)).toBeLessThan(1e-7);
    }
  });
});

describe('Karras sigmas (use_karras_sigmas)', () => {
  for (const name of ['euler', 'lms', 'dpmpp_2m'] as const) {
    it(`${name}: sigma^(1/7) evenly spaced over the schedule's range, timesteps where log-sigma interpolation meets them`, () => {
      const n = 12;
      const karras = createScheduler(name, { ...SD_CONFIG, use_karras_sigmas: true });
      karras.setTimesteps(n);
      const logTable = Array.from(karras.alphasCumprod, (a) => Math.log(Math.sqrt((1 - a) / a)));
      const sigmas = karras.sigmas.slice(0, n);
      expect(karras.sigmas[n]).toBe(0);
      expect(Math.abs(Math.log(sigmas[0]) - logTable[999])).toBeLessThan(1e-6);
      expect(Math.abs(Math.log(sigmas[n - 1]) - logTable[0])).toBeLessThan(1e-6);
      const roots = sigmas.map((sigma) => sigma ** (1 / 7));
      for (let i = 2; i < n; i++) expect(Math.abs(roots[i] - roots[i - 1] - (roots[1] - roots[0]))).toBeLessThan(1e-6);
      sigmas.forEach((sigma, i) => {
        const j = Math.min(Math.max(0, logTable.findLastIndex((l) => l <= Math.log(sigma))), 998);
        const w = (Math.log(sigma) - logTable[j]) / (logTable[j + 1] - logTable[j]);
        const exact = j + Math.min(Math.max(w, 0), 1);
        // DPM-Solver rounds its timesteps to integers; Euler and LMS keep them as float32.
        if (name === 'dpmpp_2m') expect(karras.timesteps[i]).toBe(Math.round(exact));
        else expect(Math.abs(karras.timesteps[i] - exact)).toBeLessThan(1e-3);
      });
    });
  }
});

describe('zero terminal SNR (rescale_betas_zero_snr)', () => {
  it('makes the last timestep pure noise and keeps the first one', () => {
    const plain = createScheduler('ddim', SD_CONFIG).alphasCumprod;
    const rescaled = createScheduler('ddim', { ...SD_CONFIG, rescale_betas_zero_snr: true }).alphasCumprod;
    expect(rescaled[999]).toBe(0);
    expect(Math.abs(rescaled[0] / plain[0] - 1)).toBeLessThan(1e-6);
    for (let t = 1; t < 1000; t++) expect(rescaled[t]).toBeLessThan(rescaled[t - 1]);
    // sqrt(ᾱ) is an affine map of the original sqrt(ᾱ): check it at the midpoint.
    const [r0, rT, rMid] = [Math.sqrt(plain[0]), Math.sqrt(plain[999]), Math.sqrt(plain[500])];
    expect(Math.abs(Math.sqrt(rescaled[500]) - ((rMid - rT) * r0) / (r0 - rT))).toBeLessThan(1e-6);
  });

  it('sigma-based samplers cap the infinite terminal sigma with diffusers\' alpha-bar of 2^-24', () => {
    for (const name of ['euler', 'euler_ancestral', 'dpmpp_2m'] as const) {
      const scheduler = createScheduler(name, { ...SD_CONFIG, rescale_betas_zero_snr: true, timestep_spacing: 'trailing' });
      scheduler.setTimesteps(10);
      expect(scheduler.alphasCumprod[999]).toBe(2 ** -24);
      expect(scheduler.sigmas[0]).toBe(Math.fround(Math.sqrt((1 - 2 ** -24) / 2 ** -24)));
    }
    expect(() => createScheduler('lms', { ...SD_CONFIG, rescale_betas_zero_snr: true })).toThrow(SchedulerConfigError);
  });
});

/**
 * An exact denoiser: the model always reports the true (x0, ε) of the trajectory x_t = α_t x0 + σ_t ε.
 * Every deterministic sampler must then land exactly on the trajectory at the end of the run, for each
 * prediction type: epsilon -> ε, sample -> x0, v_prediction -> α ε - σ x0 (α, σ of the VP process).
 */
describe('exact denoiser stays on its trajectory', () => {
  const x0 = new Rng(3).normal(64).map((v) => Math.tanh(v));
  const eps = new Rng(4).normal(64);

  const cases: Array<[SchedulerName, string[]]> = [
    ['ddim', ['epsilon', 'sample', 'v_prediction']],
    ['pndm', ['epsilon']],
    ['euler', ['epsilon', 'sample', 'v_prediction']],
    ['lms', ['epsilon', 'sample', 'v_prediction']],
    ['dpmpp_2m', ['epsilon', 'sample', 'v_prediction']],
  ];
  const variants = [
    { timestep_spacing: 'leading' },
    { timestep_spacing: 'trailing' },
    { timestep_spacing: 'trailing', rescale_betas_zero_snr: true },
  ];
  for (const [name, predictionTypes] of cases) {
    for (const prediction_type of predictionTypes) {
      for (const variant of variants) {
        // Zero terminal SNR exists for DDIM, Euler and DPM, and only v-prediction can start from pure noise.
        if (variant.rescale_betas_zero_snr && (prediction_type !== 'v_prediction' || name === 'lms')) continue;
        it(`${name} with ${prediction_type}, ${JSON.stringify(variant)}`, () => {
          const scheduler = createScheduler(name, { ...SD_CONFIG, prediction_type, ...variant });
          scheduler.setTimesteps(8);
          const sigmaBased = 'sigmas' in scheduler && name !== 'dpmpp_2m';
          /** VP coefficients (α, σ) at step i; i = steps means the end of the run. */
          const vp = (i: number): [number, number] => {
            if ('sigmas' in scheduler) {
              const s = (scheduler as SigmaScheduler).sigmas[i];
              return [1 / Math.sqrt(s * s + 1), s / Math.sqrt(s * s + 1)];
            }
            const ac = scheduler.alphasCumprod;
            const a = i < scheduler.timesteps.length ? ac[scheduler.timesteps[i]] : ac[0];
            return [Math.sqrt(a), Math.sqrt(1 - a)];
          };
          /** The sample the scheduler holds at step i: VP x, or x / α for the k-diffusion (sigma) samplers. */
          const onTrajectory = (i: number) => {
            const [a, s] = vp(i);
            return x0.map((v, j) => (sigmaBased ? v + (s / a) * eps[j] : a * v + s * eps[j]));
          };
          let x: Float64Array = onTrajectory(0);
          scheduler.timesteps.forEach((t, i) => {
            const [a, s] = vp(i);
            const out = x0.map((v, j) =>
              prediction_type === 'epsilon' ? eps[j] : prediction_type === 'sample' ? v : a * eps[j] - s * v,
            );
            scheduler.scaleModelInput(x, t);
            x = scheduler.step(out, t, x);
          });
          const expected = onTrajectory(scheduler.timesteps.length);
          expect(relativeL2(x, expected)).toBeLessThan(1e-9);
        });
      }
    }
  }
});

/**
 * For data x0 ~ N(0, s^2) the ideal denoiser is linear and the probability-flow ODE has the closed-form
 * solution x(σ) = sqrt(s^2 + σ^2) z (k-diffusion scale). Integrating it with the exact denoiser shows each
 * solver's order: doubling the steps divides the error by 2^order (multistep methods start at first order,
 * which caps their global order at 2). Karras sigmas give the smooth grid this needs; the last step, a
 * jump to σ = 0 that returns the denoiser's posterior mean, is left out.
 */
describe('convergence order on Gaussian data', () => {
  const s = 0.5;
  function error(name: SchedulerName, extra: object, steps: number): number {
    const scheduler = createScheduler(name, { ...SD_CONFIG, use_karras_sigmas: true, ...extra }) as Scheduler & SigmaScheduler;
    scheduler.setTimesteps(steps);
    const vp = name === 'dpmpp_2m';
    const exact = (i: number) => {
      const sigma = scheduler.sigmas[i];
      return Math.sqrt(s * s + sigma * sigma) / (vp ? Math.sqrt(sigma * sigma + 1) : 1);
    };
    let x: Float64Array = Float64Array.of(exact(0));
    for (let i = 0; i < steps - 1; i++) {
      const t = scheduler.timesteps[i];
      const sigma = scheduler.sigmas[i];
      const [alpha, noise] = [1 / Math.sqrt(sigma * sigma + 1), sigma / Math.sqrt(sigma * sigma + 1)];
      const xVp = scheduler.scaleModelInput(x, t)[0];
      const x0 = (alpha * s * s * xVp) / (alpha * alpha * s * s + noise * noise);
      x = scheduler.step(Float64Array.of((xVp - alpha * x0) / noise), t, x);
    }
    return Math.abs(x[0] / exact(steps - 1) - 1);
  }
  const ratio = (name: SchedulerName, extra: object = {}) => error(name, extra, 40) / error(name, extra, 80);

  it('Euler and first-order DPM-Solver are first order', () => {
    for (const r of [ratio('euler'), ratio('dpmpp_2m', { solver_order: 1 })]) {
      expect(r).toBeGreaterThan(1.8);
      expect(r).toBeLessThan(2.2);
    }
  });

  it('DPM-Solver++ 2M (midpoint and heun) and 3M are second order, 3M the more accurate', () => {
    expect(ratio('dpmpp_2m')).toBeGreaterThan(3.6);
    expect(ratio('dpmpp_2m', { solver_type: 'heun' })).toBeGreaterThan(3.6);
    expect(ratio('dpmpp_2m', { solver_order: 3 })).toBeGreaterThan(3.4);
    expect(error('dpmpp_2m', { solver_order: 3 }, 80)).toBeLessThan(error('dpmpp_2m', {}, 80) / 2);
  });

  it('LMS (4th order multistep) beats second order', () => {
    expect(ratio('lms')).toBeGreaterThan(10);
  });
});

describe('stochastic schedulers', () => {
  it('Euler ancestral: an Euler step to sigma_down plus sigma_up of the Rng noise, sigma_down^2 + sigma_up^2 = sigma_next^2', () => {
    const scheduler = createScheduler('euler_ancestral', SD_CONFIG);
    scheduler.setTimesteps(10);
    const x = new Rng(5).normal(32).map((v) => v * scheduler.initNoiseSigma);
    const eps = new Rng(6).normal(32);
    const t = scheduler.timesteps[0];
    const next = scheduler.step(eps, t, x, new Rng(7));
    const [from, to] = [scheduler.sigmas[0], scheduler.sigmas[1]];
    const up = Math.sqrt((to ** 2 * (from ** 2 - to ** 2)) / from ** 2);
    const down = Math.sqrt(to ** 2 - up ** 2);
    const z = new Rng(7).normal(32);
    const expected = x.map((v, i) => v - from * eps[i] + down * eps[i] + up * z[i]);
    expect(relativeL2(next, expected)).toBeLessThan(1e-12);
    expect(() => scheduler.step(eps, scheduler.timesteps[1], next)).toThrow(SchedulerUsageError);
  });

  it('DDIM with eta: the deterministic step with a share of the direction replaced by fresh noise', () => {
    const deterministic = createScheduler('ddim', SD_CONFIG);
    const noisy = createScheduler('ddim', SD_CONFIG, { eta: 1 });
    const same = createScheduler('ddim', SD_CONFIG, { eta: 0 });
    for (const scheduler of [deterministic, noisy, same]) scheduler.setTimesteps(10);
    const [t, prev] = deterministic.timesteps;
    const x = new Rng(13).normal(32);
    const eps = new Rng(14).normal(32);
    expect(Array.from(same.step(eps, t, x, new Rng(15)))).toEqual(Array.from(deterministic.step(eps, t, x)));
    const [abar, abarPrev] = [noisy.alphasCumprod[t], noisy.alphasCumprod[prev]];
    const std = Math.sqrt(((1 - abarPrev) / (1 - abar)) * (1 - abar / abarPrev));
    const x0 = x.map((v, i) => (v - Math.sqrt(1 - abar) * eps[i]) / Math.sqrt(abar));
    const z = new Rng(15).normal(32);
    const expected = x0.map((v, i) => Math.sqrt(abarPrev) * v + Math.sqrt(1 - abarPrev - std * std) * eps[i] + std * z[i]);
    expect(relativeL2(noisy.step(eps, t, x, new Rng(15)), expected)).toBeLessThan(1e-12);
    expect(() => noisy.step(eps, t, x)).toThrow(SchedulerUsageError);
    expect(() => createScheduler('euler', SD_CONFIG, { eta: 1 })).toThrow(SchedulerConfigError);
  });

  it('DDPM reverse step: posterior mean of q(x_prev | x_t, x0) plus its fixed_small standard deviation times Rng noise', () => {
    const ddpm = createScheduler('ddpm', SD_CONFIG);
    ddpm.setTimesteps(10);
    const [t, prev] = ddpm.timesteps;
    const x0 = new Rng(8).normal(32).map(Math.tanh);
    const eps = new Rng(9).normal(32);
    const xt = ddpm.addNoise(x0, eps, [t]);
    const next = ddpm.step(eps, t, xt, new Rng(10));
    const [abar, abarPrev] = [ddpm.alphasCumprod[t], ddpm.alphasCumprod[prev]];
    const beta = 1 - abar / abarPrev;
    const mean = x0.map((v, i) => ((Math.sqrt(abarPrev) * beta) / (1 - abar)) * v + ((Math.sqrt(1 - beta) * (1 - abarPrev)) / (1 - abar)) * xt[i]);
    const std = Math.sqrt(((1 - abarPrev) / (1 - abar)) * beta);
    const z = new Rng(10).normal(32);
    expect(relativeL2(next, mean.map((m, i) => m + std * z[i]))).toBeLessThan(1e-12);
  });
});

describe('DDPM training targets', () => {
  it('addNoise and getVelocity are per-row rotations of (x0, noise): x0 = sqrt(abar) x_t - sqrt(1 - abar) v', () => {
    const ddpm = createScheduler('ddpm', SD_CONFIG);
    const x0 = new Rng(11).normal(2 * 16);
    const eps = new Rng(12).normal(2 * 16);
    const timesteps = [17, 903];
    const xt = ddpm.addNoise(x0, eps, timesteps);
    const v = ddpm.getVelocity(x0, eps, timesteps);
    const recovered = xt.map((x, i) => {
      const abar = ddpm.alphasCumprod[timesteps[Math.floor(i / 16)]];
      return Math.sqrt(abar) * x - Math.sqrt(1 - abar) * v[i];
    });
    expect(relativeL2(recovered, x0)).toBeLessThan(1e-12);
    expect(() => ddpm.addNoise(x0, eps, [1, 2, 3])).toThrow(SchedulerUsageError);
    expect(() => ddpm.addNoise(x0, eps, [1, 1000])).toThrow(SchedulerUsageError);
  });
});

describe('LMS integration coefficients', () => {
  it('sum to the step length and match an independent adaptive Simpson integral to 1e-10', () => {
    const lms = createScheduler('lms', SD_CONFIG);
    lms.setTimesteps(25);
    const s = lms.sigmas;
    for (const t of [3, 12, 24]) {
      const order = 4;
      const coefficients = Array.from({ length: order }, (_, j) => lms.lmsCoefficient(order, t, j));
      expect(Math.abs(coefficients.reduce((a, b) => a + b, 0) - (s[t + 1] - s[t]))).toBeLessThan(1e-12);
      coefficients.forEach((c, j) => {
        const basis = (tau: number) => {
          let p = 1;
          for (let k = 0; k < order; k++) if (k !== j) p *= (tau - s[t - k]) / (s[t - j] - s[t - k]);
          return p;
        };
        expect(Math.abs(c - simpson(basis, s[t], s[t + 1], 1e-13))).toBeLessThan(1e-10);
      });
    }
  });
});

function simpson(f: (x: number) => number, a: number, b: number, tolerance: number): number {
  const m = (a + b) / 2;
  const whole = ((b - a) / 6) * (f(a) + 4 * f(m) + f(b));
  const refine = (lo: number, hi: number, estimate: number, depth: number): number => {
    const mid = (lo + hi) / 2;
    const left = ((mid - lo) / 6) * (f(lo) + 4 * f((lo + mid) / 2) + f(mid));
    const right = ((hi - mid) / 6) * (f(mid) + 4 * f((mid + hi) / 2) + f(hi));
    if (depth > 40 || Math.abs(left + right - estimate) < 15 * tolerance) return left + right + (left + right - estimate) / 15;
    return refine(lo, mid, left, depth + 1) + refine(mid, hi, right, depth + 1);
  };
  return refine(a, b, whole, 0);
}

describe('configuration and usage errors', () => {
  it('rejects unsupported or malformed configs with a SchedulerConfigError', () => {
    expect(() => createScheduler('ddim', { ...SD_CONFIG, beta_schedule: 'cubic' })).toThrow(SchedulerConfigError);
    expect(() => createScheduler('ddim', { ...SD_CONFIG, thresholding: true })).toThrow(/thresholding/);
    expect(() => createScheduler('dpmpp_2m', { ...SD_CONFIG, algorithm_type: 'sde-dpmsolver++' })).toThrow(SchedulerConfigError);
    expect(() => createScheduler('nope' as SchedulerName, SD_CONFIG)).toThrow(SchedulerConfigError);
    expect(() => parseSchedulerConfigJson('{oops')).toThrow(SchedulerConfigError);
  });

  it('reads Python-written configs with -Infinity', () => {
    const config = parseSchedulerConfigJson('{"lambda_min_clipped": -Infinity, "_note": "[NaN, -Infinity]", "solver_order": 2}');
    expect(config.lambda_min_clipped).toBe(-Infinity);
    expect(config._note).toBe('[NaN, -Infinity]');
    const dpm = createScheduler('dpmpp_2m', { ...SD_CONFIG, ...config });
    dpm.setTimesteps(5);
    expect(dpm.timesteps[0]).toBe(999);
  });

  it('refuses to step before setTimesteps, at a foreign timestep, or with mismatched lengths', () => {
    const ddim = createScheduler('ddim', SD_CONFIG);
    const x = new Float64Array(4);
    expect(() => ddim.step(x, 1, x)).toThrow(SchedulerUsageError);
    ddim.setTimesteps(10);
    expect(() => ddim.step(new Float64Array(3), 901, x)).toThrow(SchedulerUsageError);
    expect(() => ddim.setTimesteps(0)).toThrow(SchedulerUsageError);
    const euler = createScheduler('euler', SD_CONFIG);
    euler.setTimesteps(10);
    expect(() => euler.scaleModelInput(x, 123.5)).toThrow(SchedulerUsageError);
  });
});
