import { SchedulerConfigError, type SchedulerName, resolveSchedulerConfig } from './config';
import { DdimScheduler } from './ddim';
import { DdpmScheduler } from './ddpm';
import { DpmSolverMultistepScheduler } from './dpm-solver-multistep';
import { EulerScheduler } from './euler';
import { EulerAncestralScheduler } from './euler-ancestral';
import { LmsScheduler } from './lms';
import { PndmScheduler } from './pndm';
import type { Scheduler } from './scheduler';

export { SAMPLER_NAMES, SCHEDULER_NAMES, SchedulerConfigError, parseSchedulerConfigJson, resolveSchedulerConfig } from './config';
export type { SamplerName, SchedulerConfig, SchedulerName } from './config';
export { SchedulerUsageError, type Scheduler, type SigmaScheduler } from './scheduler';
export { DdimScheduler, DdpmScheduler, DpmSolverMultistepScheduler, EulerAncestralScheduler, EulerScheduler, LmsScheduler, PndmScheduler };

const CLASSES = {
  ddim: DdimScheduler,
  pndm: PndmScheduler,
  euler: EulerScheduler,
  euler_ancestral: EulerAncestralScheduler,
  dpmpp_2m: DpmSolverMultistepScheduler,
  lms: LmsScheduler,
  ddpm: DdpmScheduler,
} satisfies Record<SchedulerName, new (config: never) => Scheduler>;

/** Per-run sampler settings that are not part of scheduler_config.json. */
export interface SamplerOptions {
  /** DDIM's noise scale (diffusers' `eta`): 0 deterministic (default), 1 DDPM-like. DDIM only. */
  eta?: number;
}

/**
 * Builds a scheduler from a pack's scheduler_config.json object (any diffusers scheduler's keys: those of
 * other schedulers are ignored, missing ones take this scheduler's diffusers defaults).
 */
export function createScheduler<N extends SchedulerName>(
  name: N,
  config: Record<string, unknown>,
  options: SamplerOptions = {},
): InstanceType<(typeof CLASSES)[N]> {
  const resolved = resolveSchedulerConfig(name, config);
  if (name === 'ddim') return new DdimScheduler(resolved, options) as InstanceType<(typeof CLASSES)[N]>;
  if (options.eta !== undefined) throw new SchedulerConfigError(`eta applies to ddim only, not ${name}`);
  return new CLASSES[name](resolved) as InstanceType<(typeof CLASSES)[N]>;
}
