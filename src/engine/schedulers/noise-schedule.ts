/**
 * The discrete noise schedule every scheduler starts from, and the array helpers of diffusers' `set_timesteps`.
 *
 * diffusers keeps betas and alphas_cumprod as float32 tensors and builds sigma tables in float32; rounding
 * through `Math.fround` at the same places keeps our timesteps and sigmas equal to theirs, not merely close.
 * Everything applied to latents stays float64.
 */
import type { SchedulerConfig } from './config';

const f32 = Math.fround;

/**
 * torch.linspace(start, end, n, dtype=float32): the first half counts up from start, the rest down from
 * end, each point rounded once (a fused multiply-add; step * i is exact in float64). This reproduces
 * diffusers' alphas_cumprod bit for bit.
 */
function linspaceFloat32(start: number, end: number, n: number): number[] {
  const [a, b] = [f32(start), f32(end)];
  const step = f32(f32(b - a) / (n - 1));
  return Array.from({ length: n }, (_, i) => (i < n / 2 ? f32(a + step * i) : f32(b - step * (n - 1 - i))));
}

/** Betas of a cosine alpha-bar (Nichol & Dhariwal), capped at 0.999, as diffusers' `betas_for_alpha_bar`. */
function cosineBetas(n: number): number[] {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
  return Array.from({ length: n }, (_, i) => f32(Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), 0.999)));
}

export function betas(config: SchedulerConfig): number[] {
  const n = config.num_train_timesteps;
  if (config.trained_betas) return config.trained_betas.map(f32);
  switch (config.beta_schedule) {
    case 'linear':
      return linspaceFloat32(config.beta_start, config.beta_end, n);
    case 'scaled_linear':
      return linspaceFloat32(Math.sqrt(config.beta_start), Math.sqrt(config.beta_end), n).map((b) => f32(b * b));
    case 'squaredcos_cap_v2':
      return cosineBetas(n);
  }
}

/** Π (1 - β_s): torch.cumprod multiplies float32 factors in a double accumulator and rounds each output. */
function cumprodOfAlphas(betas: number[]): Float64Array {
  const out = new Float64Array(betas.length);
  let product = 1;
  betas.forEach((beta, t) => {
    product *= f32(1 - beta);
    out[t] = f32(product);
  });
  return out;
}

/**
 * Lin et al. 2023 ("Common diffusion noise schedules and sample steps are flawed", Algorithm 1): shift and
 * scale sqrt(ᾱ) so the last timestep has zero signal while the first keeps its value, in float32.
 */
function rescaleToZeroTerminalSnr(betas: number[]): number[] {
  const root = Array.from(cumprodOfAlphas(betas), (a) => f32(Math.sqrt(a)));
  const [first, last] = [root[0], root[root.length - 1]];
  const scale = f32(first / f32(first - last));
  const alphaBar = root.map((r) => f32(f32(r - last) * scale)).map((r) => f32(r * r));
  return alphaBar.map((a, t) => f32(1 - (t === 0 ? a : f32(a / alphaBar[t - 1]))));
}

/**
 * ᾱ_t for every training timestep. With `rescale_betas_zero_snr`, ᾱ of the last timestep is 0; samplers
 * that divide by it (the sigma-based ones) pass `zeroSnrFloor` to use diffusers' 2^-24 there instead.
 */
export function alphasCumprod(config: SchedulerConfig, { zeroSnrFloor = false } = {}): Float64Array {
  const base = betas(config);
  const out = cumprodOfAlphas(config.rescale_betas_zero_snr ? rescaleToZeroTerminalSnr(base) : base);
  if (config.rescale_betas_zero_snr && zeroSnrFloor) out[out.length - 1] = 2 ** -24;
  return out;
}

/** σ_t = sqrt((1 - ᾱ_t) / ᾱ_t) for every training timestep, in float32 as diffusers computes it. */
export function sigmaTable(alphasCumprod: Float64Array): Float64Array {
  return alphasCumprod.map((a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
}

/** numpy's `round`: halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.linspace(start, stop, n) in float64: start + i * step, with the last point exactly `stop`. */
export function linspace(start: number, stop: number, n: number): number[] {
  const step = (stop - start) / (n - 1);
  return Array.from({ length: n }, (_, i) => (n > 1 && i === n - 1 ? stop : start + i * step));
}

/** np.arange(start, stop, step) for a float step: ceil((stop - start) / step) points start + i * delta. */
export function arange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  const delta = start + step - start;
  return Array.from({ length }, (_, i) => start + i * delta);
}

/** np.interp at x over the table's integer abscissae 0..n-1 (x inside the table). */
export function interpolate(table: ArrayLike<number>, x: number): number {
  const j = Math.min(Math.floor(x), table.length - 1);
  if (x === j) return table[j];
  return (table[j + 1] - table[j]) * (x - j) + table[j];
}

/**
 * Karras et al. (2022) sigmas: `n` points evenly spaced in σ^(1/7) from sigmaMax down to sigmaMin.
 */
function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7;
  const [minInv, maxInv] = [sigmaMin ** (1 / rho), sigmaMax ** (1 / rho)];
  return linspace(0, 1, n).map((ramp) => (maxInv + ramp * (minInv - maxInv)) ** rho);
}

/**
 * The fractional training timestep of a sigma: linear interpolation in log σ between the two table entries
 * that bracket it (diffusers' `_sigma_to_t`).
 */
function sigmaToTimestep(sigma: number, logSigmas: Float64Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigma - logSigmas[i] >= 0) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const w = Math.min(Math.max((logSigmas[low] - logSigma) / (logSigmas[low] - logSigmas[low + 1]), 0), 1);
  return (1 - w) * low + w * (low + 1);
}

/**
 * A Karras run over a sigma table (diffusers' `_convert_to_karras`, then `_sigma_to_t` for each sigma): its
 * sigmas and their fractional training timesteps, before per-scheduler rounding.
 */
export function karrasSchedule(table: Float64Array, sigmaMin: number, sigmaMax: number, n: number): { sigmas: number[]; timesteps: number[] } {
  const logSigmas = table.map((sigma) => f32(Math.log(sigma))); // np.log of a float32 array stays float32
  const sigmas = karrasSigmas(sigmaMin, sigmaMax, n);
  return { sigmas, timesteps: sigmas.map((sigma) => sigmaToTimestep(sigma, logSigmas)) };
}

/**
 * The run's timesteps, descending, before per-scheduler rounding (diffusers' three `timestep_spacing`s):
 * - linspace: n points evenly over [0, T-1], the last one T-1 (unrounded here);
 * - leading: multiples of floor(T/n) from 0, shifted by `steps_offset`;
 * - trailing: T - 1 - round(k T/n) for k = 0..n-1, so the run always starts at T-1.
 */
export function spacedTimesteps(config: SchedulerConfig, n: number): number[] {
  const T = config.num_train_timesteps;
  switch (config.timestep_spacing) {
    case 'linspace':
      return linspace(0, T - 1, n).reverse();
    case 'leading': {
      const ratio = Math.floor(T / n);
      return Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + config.steps_offset);
    }
    case 'trailing':
      return arange(T, 0, -T / n).map((t) => roundHalfEven(t) - 1);
  }
}
