import type { Rng } from '../random';

/**
 * A sampler over a diffusion model's noise prediction, following diffusers' scheduler API:
 * `setTimesteps(n)`, then for each `t` of `timesteps`: `scaleModelInput` -> model -> `step`.
 * Latents are flat float64 arrays; a scheduler holds per-run state (step index, history), so one
 * instance serves one sampling run at a time and `setTimesteps` resets it.
 */
export interface Scheduler {
  /** The model timesteps of the run, as diffusers passes them to the UNet (Euler-family ones may be fractional). */
  readonly timesteps: number[];
  /** Standard deviation of the initial latents: multiply unit noise by it. */
  readonly initNoiseSigma: number;
  setTimesteps(numInferenceSteps: number): void;
  scaleModelInput(sample: Float64Array, t: number): Float64Array;
  /** The previous (less noisy) sample. Stochastic schedulers draw their noise from `rng`. */
  step(modelOutput: Float64Array, t: number, sample: Float64Array, rng?: Rng): Float64Array;
}

/** The k-diffusion family (Euler, Euler ancestral, LMS, DPM-Solver) also exposes its sigmas (with a final entry). */
export interface SigmaScheduler extends Scheduler {
  readonly sigmas: number[];
}

/** A scheduler used out of order: a step before `setTimesteps`, a timestep not in the run, a missing Rng. */
export class SchedulerUsageError extends Error {
  override readonly name = 'SchedulerUsageError';
}

export function requireTimesteps(timesteps: number[]): void {
  if (timesteps.length === 0) throw new SchedulerUsageError('call setTimesteps(n) before stepping');
}

export function requirePositiveSteps(numInferenceSteps: number, numTrainTimesteps: number): void {
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > numTrainTimesteps) {
    throw new SchedulerUsageError(`numInferenceSteps must be an integer in 1..${numTrainTimesteps}, got ${numInferenceSteps}`);
  }
}

export function requireRng(rng: Rng | undefined, scheduler: string): Rng {
  if (!rng) throw new SchedulerUsageError(`${scheduler} adds noise at each step: pass an Rng to step()`);
  return rng;
}

/**
 * Where a run resumes for timestep t (diffusers' `index_for_timestep`): its position in `timesteps`, the
 * second one when t occurs twice, so a run started mid-schedule (img2img) does not skip a sigma.
 */
function indexForTimestep(timesteps: number[], t: number): number {
  const hits = timesteps.flatMap((value, i) => (value === t ? [i] : []));
  if (hits.length === 0) throw new SchedulerUsageError(`timestep ${t} is not in this run's timesteps`);
  return hits.length > 1 ? hits[1] : hits[0];
}

/** The step a call for timestep t makes: `current` once a run has begun, else where it resumes for t. */
export function stepIndexFor(timesteps: number[], current: number | undefined, t: number): number {
  requireTimesteps(timesteps);
  const index = current ?? indexForTimestep(timesteps, t);
  if (index >= timesteps.length) throw new SchedulerUsageError('the run is over: call setTimesteps again');
  return index;
}

export function requireSameLength(modelOutput: Float64Array, sample: Float64Array): void {
  if (modelOutput.length !== sample.length) {
    throw new SchedulerUsageError(`model output has ${modelOutput.length} values, the sample ${sample.length}`);
  }
}

export function requireTrainTimestep(t: number, numTrainTimesteps: number): void {
  if (!Number.isInteger(t) || t < 0 || t >= numTrainTimesteps) {
    throw new SchedulerUsageError(`timestep must be an integer in 0..${numTrainTimesteps - 1}, got ${t}`);
  }
}
