import { randomInt, randomUUID } from 'node:crypto';
import type { DataSource } from 'typeorm';
import { z } from 'zod';
import { SAMPLER_NAMES, txt2imgProblem, type SamplerName } from '../engine';
import { Job, type JobStatus, JobType, ModelVersion, type User } from '../entities';
import type { JobQueue, JobServices } from './container';
import { badInput, conflict, notFound } from './errors';
import { cancelJobRow } from './job-lifecycle';
import { getModel, getModelBaseModel } from './models';
import { pageOf, whereCreated, type CreatedFilter, type Page, type PageRequest } from './pagination';
import { parseId, parseInput } from './validate';
import { basePackInfo } from './versions';
import { isAdmin, ownerFilter } from './viewer';
import { parseTarget, WebhookTargetInput } from './webhooks';

export interface JobFilter extends CreatedFilter {
  status?: JobStatus | null;
  type?: JobType | null;
  /** Jobs on this model (generations with it, fine-tunes of it). */
  modelId?: string | null;
  /** One user's jobs: an admin's filter (anyone else may name only themselves). */
  ownerId?: string | null;
}

/** A page of the user's jobs (an admin's: everyone's), newest first; a model filter names a model the user sees. */
export async function listJobs(db: DataSource, user: User, filter: JobFilter, page: PageRequest): Promise<Page<Job>> {
  const query = whereCreated(db.getRepository(Job).createQueryBuilder('job'), filter);
  if (filter.modelId != null) query.andWhere(`job.params->>'modelId' = :modelId`, { modelId: (await getModel(db, user, parseId(filter.modelId, 'modelId'))).id });
  if (!isAdmin(user)) query.andWhere('job.ownerId = :owner', { owner: user.id });
  if (filter.ownerId != null) query.andWhere('job.ownerId = :ownerId', { ownerId: ownerFilter(user, filter.ownerId) });
  if (filter.status) query.andWhere('job.status = :status', { status: filter.status });
  if (filter.type) query.andWhere('job.type = :type', { type: filter.type });
  return pageOf(query, page);
}

export async function getJob(db: DataSource, user: User, id: string): Promise<Job> {
  const job = await db.getRepository(Job).findOneBy({ id: parseId(id) });
  if (!job || (job.ownerId !== user.id && !isAdmin(user))) throw notFound('Job');
  return job;
}

/**
 * Marks a queued or running job CANCELED and withdraws it from the queue; a running job's worker sees
 * the status at its next step and stops.
 */
export async function cancelJob(db: DataSource, queue: JobQueue, user: User, id: string): Promise<Job> {
  const job = await getJob(db, user, id);
  if (!(await cancelJobRow(db, job))) throw conflict(`The job is already ${job.status}`);
  await queue.cancel(job.type, job.id);
  return db.getRepository(Job).findOneByOrFail({ id: job.id });
}

/** Image sides: multiples of 8 (the VAE's factor); the model may ask for a coarser multiple. */
const side = z.number().int().min(8, 'must be at least 8').max(2048, 'must be at most 2048').multipleOf(8, 'must be a multiple of 8');

const GenerateInput = z.object({
  modelId: z.string(),
  versionId: z.string().nullish(),
  prompt: z.string().trim().min(1, 'must not be empty').max(1000, 'must be at most 1000 characters'),
  negativePrompt: z.string().max(1000, 'must be at most 1000 characters').default(''),
  steps: z.number().int().min(1, 'must be at least 1').max(200, 'must be at most 200').default(30),
  guidanceScale: z.number().min(0, 'must not be negative').max(30, 'must be at most 30').default(7.5),
  /** Absent: the model's own scheduler. */
  scheduler: z.enum(SAMPLER_NAMES).nullish(),
  /** Unsigned 32-bit; drawn here when absent, so the job records what reproduces it. */
  seed: z.number().int().min(0, 'must not be negative').max(2 ** 32 - 1, 'must fit 32 bits').nullish(),
  /** Absent: the model's native size. */
  width: side.nullish(),
  height: side.nullish(),
  numImages: z.number().int().min(1, 'must be at least 1').max(8, 'must be at most 8').default(1),
  webhook: WebhookTargetInput.nullish(),
});

export type GenerateInput = z.input<typeof GenerateInput>;

/** What a generation job's `params` hold: the request with the model pinned to a base model and version. */
export interface GenerateParams {
  modelId: string;
  baseModelId: string;
  /** The version generated with; null means the base model's own weights. */
  versionId: string | null;
  prompt: string;
  negativePrompt: string;
  steps: number;
  guidanceScale: number;
  scheduler: SamplerName | null;
  seed: number;
  width: number | null;
  height: number | null;
  numImages: number;
}

/** What a generation's PNGs may take in storage: uncompressed RGB, more than a PNG of them ever takes. */
export function pngBytesBound({ numImages, width, height }: Pick<GenerateParams, 'numImages' | 'width' | 'height'>, nativeSize: number): number {
  return numImages * (width ?? nativeSize) * (height ?? nativeSize) * 3;
}

/**
 * Validates a generation request, against its model too (sizes and sampler, by the rule the worker's
 * pipeline applies), pins the model version it runs on (the model's head unless one is named) and
 * queues it. Nothing is written when the request is refused.
 */
export async function generateImages(services: JobServices, user: User, input: GenerateInput): Promise<Job> {
  const { db, store, config, admissions } = services;
  const request = parseInput(GenerateInput, input, 'input');
  const model = await getModel(db, user, parseId(request.modelId, 'modelId'));
  const webhook = request.webhook ? await parseTarget(request.webhook, config.webhooks, 'webhook') : null;
  const base = await basePackInfo(store, await getModelBaseModel(db, model));
  const problem = txt2imgProblem(base, request);
  if (problem) throw badInput(`input: ${problem}`);
  let versionId = model.headVersionId;
  if (request.versionId != null) {
    const version = await db.getRepository(ModelVersion).findOneBy({ id: parseId(request.versionId, 'versionId'), modelId: model.id });
    if (!version) throw badInput('versionId: not a version of this model');
    versionId = version.id;
  }
  const params: GenerateParams = {
    modelId: model.id,
    baseModelId: model.baseModelId,
    versionId,
    prompt: request.prompt,
    negativePrompt: request.negativePrompt,
    steps: request.steps,
    guidanceScale: request.guidanceScale,
    scheduler: request.scheduler ?? null,
    seed: request.seed ?? randomInt(2 ** 32),
    width: request.width ?? null,
    height: request.height ?? null,
    numImages: request.numImages,
  };
  return admissions.submit(user, {
    job: { id: randomUUID(), type: JobType.GENERATE, params, steps: params.steps },
    images: params.numImages,
    storageBytes: pngBytesBound(params, base.geometry.nativeSize),
    webhook,
  });
}
