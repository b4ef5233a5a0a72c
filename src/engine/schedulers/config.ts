import { z } from 'zod';
import { describeIssues } from '../validation';
import { parsePythonJson } from './python-json';

export const SCHEDULER_NAMES = ['ddim', 'pndm', 'euler', 'euler_ancestral', 'dpmpp_2m', 'lms', 'ddpm'] as const;
export type SchedulerName = (typeof SCHEDULER_NAMES)[number];

/** The schedulers images are sampled with: DDPM is a training schedule, not one to sample with. */
export const SAMPLER_NAMES = SCHEDULER_NAMES.filter((name) => name !== 'ddpm') as [SamplerName, ...SamplerName[]];
export type SamplerName = Exclude<SchedulerName, 'ddpm'>;

/** A scheduler_config.json the engine cannot honour; nothing was built. */
export class SchedulerConfigError extends Error {
  override readonly name = 'SchedulerConfigError';
}

/**
 * The union of the scheduler_config.json keys our schedulers read, after defaults are applied.
 * Keys of other schedulers (a pack ships one config for all) and `_`-prefixed metadata are ignored.
 */
const schema = z.object({
  num_train_timesteps: z.number().int().min(2),
  beta_start: z.number().positive(),
  beta_end: z.number().positive(),
  beta_schedule: z.enum(['linear', 'scaled_linear', 'squaredcos_cap_v2']),
  trained_betas: z.array(z.number()).nullable(),
  prediction_type: z.enum(['epsilon', 'v_prediction', 'sample']),
  timestep_spacing: z.enum(['leading', 'trailing', 'linspace']),
  steps_offset: z.number().int(),
  clip_sample: z.boolean(),
  clip_sample_range: z.number().positive(),
  set_alpha_to_one: z.boolean(),
  skip_prk_steps: z.boolean(),
  use_karras_sigmas: z.boolean().nullable(),
  sigma_min: z.number().nullable(),
  sigma_max: z.number().nullable(),
  final_sigmas_type: z.enum(['zero', 'sigma_min']),
  solver_order: z.number().int().min(1).max(3),
  algorithm_type: z.string(),
  solver_type: z.enum(['midpoint', 'heun']),
  lower_order_final: z.boolean(),
  euler_at_final: z.boolean(),
  lambda_min_clipped: z.custom<number>((v) => typeof v === 'number' && !Number.isNaN(v), 'expected a number or -Infinity'),
  variance_type: z.string().nullable(),
  rescale_betas_zero_snr: z.boolean(),
  // Options diffusers has that we refuse rather than silently ignore: each must keep its default.
  thresholding: z.literal(false),
  interpolation_type: z.literal('linear'),
  timestep_type: z.literal('discrete'),
  use_exponential_sigmas: z.literal(false).nullable(),
  use_beta_sigmas: z.literal(false).nullable(),
  use_lu_lambdas: z.literal(false),
  use_flow_sigmas: z.literal(false),
  use_dynamic_shifting: z.literal(false),
});

export type SchedulerConfig = z.infer<typeof schema>;

const COMMON: SchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  prediction_type: 'epsilon',
  timestep_spacing: 'linspace',
  steps_offset: 0,
  clip_sample: false,
  clip_sample_range: 1,
  set_alpha_to_one: false,
  skip_prk_steps: false,
  use_karras_sigmas: false,
  sigma_min: null,
  sigma_max: null,
  final_sigmas_type: 'zero',
  solver_order: 2,
  algorithm_type: 'dpmsolver++',
  solver_type: 'midpoint',
  lower_order_final: true,
  euler_at_final: false,
  lambda_min_clipped: -Infinity,
  variance_type: null,
  thresholding: false,
  rescale_betas_zero_snr: false,
  interpolation_type: 'linear',
  timestep_type: 'discrete',
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  use_lu_lambdas: false,
  use_flow_sigmas: false,
  use_dynamic_shifting: false,
};

/** The defaults where a diffusers scheduler class departs from COMMON. */
const CLASS_DEFAULTS: Record<SchedulerName, Partial<SchedulerConfig>> = {
  ddim: { timestep_spacing: 'leading', clip_sample: true, set_alpha_to_one: true },
  pndm: { timestep_spacing: 'leading' },
  euler: {},
  euler_ancestral: {},
  dpmpp_2m: {},
  lms: {},
  ddpm: { timestep_spacing: 'leading', clip_sample: true, variance_type: 'fixed_small' },
};

/** Resolves a scheduler_config.json object for one scheduler the way diffusers' `from_config` does. */
export function resolveSchedulerConfig(name: SchedulerName, config: Record<string, unknown>): SchedulerConfig {
  if (!SCHEDULER_NAMES.includes(name)) {
    throw new SchedulerConfigError(`unknown scheduler ${JSON.stringify(name)}; expected one of ${SCHEDULER_NAMES.join(', ')}`);
  }
  const given = Object.fromEntries(Object.entries(config).filter(([key, value]) => key in COMMON && value !== undefined));
  const parsed = schema.safeParse({ ...COMMON, ...CLASS_DEFAULTS[name], ...given });
  if (!parsed.success) {
    throw new SchedulerConfigError(`scheduler_config.json for ${name} is not supported: ${describeIssues(parsed.error, { root: '' })}`);
  }
  return parsed.data;
}

/** Reads scheduler_config.json text, as Python wrote it. */
export function parseSchedulerConfigJson(text: string): Record<string, unknown> {
  try {
    return parsePythonJson(text);
  } catch (error) {
    throw new SchedulerConfigError(`scheduler_config.json is not valid JSON: ${(error as Error).message}`);
  }
}
