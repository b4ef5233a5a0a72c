import { randomInt, randomUUID } from 'node:crypto';
import type { DataSource, EntityManager } from 'typeorm';
import { In } from 'typeorm';
import { z } from 'zod';
import { DEFAULT_LORA_RANK, loraRank, readSafetensorsHeader } from '../engine';
import {
  BaseModel,
  Concept,
  ConceptKind,
  Contribution,
  ContributionStatus,
  FineTuneMethod,
  InstanceImage,
  Job,
  JobStatus,
  JobType,
  Model,
  ModelKind,
  ModelVersion,
  type User,
} from '../entities';
import type { ObjectStore } from '../storage/object-store';
import type { JobServices } from './container';
import { badInput, notFound } from './errors';
import { conceptCategory, getConcept, identifierFor } from './concepts';
import { MAX_INSTANCE_IMAGES, photoSizeProblem } from './instance-images';
import { admitJob } from './job-admissions';
import { getJob, pngBytesBound } from './jobs';
import { ModelEventType, publishModelEvent } from './model-events';
import { getModel, getModelToChange } from './models';
import { MAX_PREVIEW_PROMPTS, MAX_PREVIEW_STEPS, previewCount, previewSettings, type PreviewSettings } from './previews';
import { admitStorage } from './storage-quota';
import { basePackInfo } from './versions';
import { parseId } from './validate';
import { attachJobWebhook, jobWebhookTarget, WebhookTargetInput } from './webhooks';

/** The original's recommended range tops out at 1200 steps for faces; its code allowed 1500. */
const MAX_STEPS = 1500;

/**
 * What a fine-tune runs with when the request leaves steps or learning rate out, by method: the
 * original BIG system's code defaults for full fine-tunes, diffusers' DreamBooth-LoRA example for LoRA.
 * A face needs more steps than an object or a style (the original's guide: 200 to 600 for those, 600 to
 * 1200 for faces), so FACE concepts default to about four times as many.
 */
export const TRAINING_DEFAULTS: Record<FineTuneMethod, { steps: Record<ConceptKind, number>; learningRate: number }> = {
  [FineTuneMethod.FULL]: { steps: { OBJECT: 200, STYLE: 200, FACE: 800 }, learningRate: 5e-6 },
  [FineTuneMethod.LORA]: { steps: { OBJECT: 500, STYLE: 500, FACE: 1000 }, learningRate: 1e-4 },
};

/**
 * How each step's examples are drawn when the request leaves it out: as the original trained (batch 2,
 * gradient accumulation 2, so 4 instance and 4 prior images a step; diffusers' default random crop, no flip).
 */
export const BATCH_DEFAULTS = { batchSize: 2, gradientAccumulation: 2, centerCrop: false, flip: false } as const;
/** Examples of each set per micro-batch, and micro-batches per step, at most. */
const MAX_BATCH = 8;

const FineTuneInput = z
  .object({
    target: z.enum(ModelKind),
    modelId: z.string().nullish(),
    baseModelId: z.string().nullish(),
    name: z.string().trim().min(1, 'must not be empty').max(200, 'must be at most 200 characters').nullish(),
    token: z.string().nullish(),
    category: conceptCategory,
    kind: z.enum(ConceptKind),
    instanceImageIds: z
      .array(z.string())
      .max(MAX_INSTANCE_IMAGES, `takes at most ${MAX_INSTANCE_IMAGES} photos`)
      .refine((ids) => new Set(ids).size === ids.length, 'must not repeat a photo')
      .nullish(),
    fromConceptId: z.string().nullish(),
    steps: z.number().int().min(1, 'must be at least 1').max(MAX_STEPS, `must be at most ${MAX_STEPS}`).nullish(),
    learningRate: z.number().gt(0, 'must be positive').max(1e-2, 'must be at most 1e-2').nullish(),
    method: z.enum(FineTuneMethod),
    rank: z.number().int().min(1, 'must be at least 1').max(128, 'must be at most 128').nullish(),
    /** Unsigned 32-bit; drawn here when absent, so the job records what reproduces it. */
    seed: z.number().int().min(0, 'must not be negative').max(2 ** 32 - 1, 'must fit 32 bits').nullish(),
    batchSize: z.number().int().min(1, 'must be at least 1').max(MAX_BATCH, `must be at most ${MAX_BATCH}`).nullish(),
    gradientAccumulation: z.number().int().min(1, 'must be at least 1').max(MAX_BATCH, `must be at most ${MAX_BATCH}`).nullish(),
    centerCrop: z.boolean().nullish(),
    flip: z.boolean().nullish(),
    webhook: WebhookTargetInput.nullish(),
    previewPrompts: z
      .array(z.string().trim().min(1, 'must not be empty').max(1000, 'must be at most 1000 characters'))
      .max(MAX_PREVIEW_PROMPTS, `takes at most ${MAX_PREVIEW_PROMPTS} prompts`)
      .nullish(),
    previewEvery: z.number().int().min(1, 'must be at least 1').nullish(),
    previewSteps: z.number().int().min(1, 'must be at least 1').max(MAX_PREVIEW_STEPS, `must be at most ${MAX_PREVIEW_STEPS}`).nullish(),
  })
  .superRefine((input, ctx) => {
    if (!input.instanceImageIds?.length && input.fromConceptId == null) {
      ctx.addIssue({ code: 'custom', path: ['instanceImageIds'], message: 'needs at least one photo (or fromConceptId)' });
    }
    if (input.rank != null && input.method !== FineTuneMethod.LORA) {
      ctx.addIssue({ code: 'custom', path: ['rank'], message: 'applies to LORA fine-tunes only' });
    }
  });

export type FineTuneInput = z.input<typeof FineTuneInput>;

/** A fine-tune that cannot run as asked, with a message meant for the user (anything else is logged and reported generically). */
export class FineTuneFailure extends Error {
  override readonly name = 'FineTuneFailure';
}

/** What a fine-tune job's `params` hold; the worker reads the rest from the rows they name. */
export interface FineTuneParams {
  modelId: string;
  conceptId: string;
  contributionId: string;
  steps: number;
  learningRate: number;
  method: FineTuneMethod;
  /** LoRA rank; null for FULL. */
  rank: number | null;
  /** Seeds the training's noise and order, recorded so a run can be repeated. */
  seed: number;
  /** Instance (and as many prior) examples per micro-batch. */
  batchSize: number;
  /** Micro-batches per optimizer step. */
  gradientAccumulation: number;
  /** Train on the center square of each image rather than a random one. */
  centerCrop: boolean;
  /** Mirror images at random. */
  flip: boolean;
  /** Validation prompts drawn every few steps; null: none. */
  preview: PreviewSettings | null;
}

/**
 * A fine-tune job's settings. Jobs queued before batches were settable trained one example a step on
 * the center square, unflipped: those are filled in, so the record says what the job did.
 */
export function fineTuneParams(job: Pick<Job, 'params'>): FineTuneParams {
  return { batchSize: 1, gradientAccumulation: 1, centerCrop: true, flip: false, preview: null, ...(job.params as Partial<FineTuneParams>) } as FineTuneParams;
}

/** What a queued fine-tune made: its job, the model it trains (new or existing), the concept with its identifier, the contribution. */
export interface StartedFineTune {
  job: Job;
  model: Model;
  concept: Concept;
  contribution: Contribution;
}

/**
 * Validates a fine-tune request and queues it: the target model (new for PRIVATE, or an existing
 * metamodel), a Concept with a rare identifier, the user's staged photos attached to it, a PENDING
 * Contribution and a QUEUED Job, all in one transaction. Anything refused leaves nothing behind.
 */
export async function startFineTune(services: JobServices, user: User, input: FineTuneInput): Promise<StartedFineTune> {
  const { db, store, queue, config } = services;
  const parsed = FineTuneInput.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw badInput(`${issue.path.join('.') || 'input'}: ${issue.message}`);
  }
  const request = parsed.data;
  const imageIds = (request.instanceImageIds ?? []).map((id) => parseId(id, 'instanceImageIds'));
  const existing = await existingTarget(db, user, request);
  const baseModel = await db.getRepository(BaseModel).findOneBy({
    id: existing?.baseModelId ?? parseId(request.baseModelId ?? '', 'baseModelId'),
  });
  if (!baseModel) throw badInput('baseModelId: no such base model');
  const base = await basePackInfo(store, baseModel);
  const webhook = await jobWebhookTarget(db, user, request.webhook, config.webhooks);
  const reused = request.fromConceptId == null ? [] : await reusablePhotos(db, user, request.fromConceptId, base.geometry.nativeSize);
  if (reused.length + imageIds.length > MAX_INSTANCE_IMAGES) {
    throw badInput(`instanceImageIds: with the concept's ${reused.length} photos, takes at most ${MAX_INSTANCE_IMAGES} photos`);
  }
  // Copies, so each concept owns its objects: deleting one concept's photo never breaks another's training.
  const copies = await copyPhotos(store, user, reused);

  let started: StartedFineTune;
  try {
    started = await db.transaction(async (tx): Promise<StartedFineTune> => {
      const model = existing ? await lockModel(tx, existing.id) : await createTarget(tx, user, request, baseModel);
      const { method, rank } = await trainingMethod(tx, store, model, request);
      const images = await claimablePhotos(tx, user, imageIds, base.geometry.nativeSize);
      const token = await identifierFor(tx, base.tokenizer, model.id, request.category, request.token);

      const concept = await tx.getRepository(Concept).save(
        tx.getRepository(Concept).create({ token, category: request.category, kind: request.kind, modelId: model.id, contributorId: user.id }),
      );
      await tx.getRepository(InstanceImage).update({ id: In(images.map((i) => i.id)) }, { conceptId: concept.id });
      if (copies.length) await tx.getRepository(InstanceImage).insert(copies.map((copy) => ({ ...copy, conceptId: concept.id })));
      const contribution = await tx.getRepository(Contribution).save(
        tx.getRepository(Contribution).create({ userId: user.id, modelId: model.id, conceptId: concept.id, status: ContributionStatus.PENDING }),
      );
      const steps = request.steps ?? TRAINING_DEFAULTS[request.method].steps[request.kind];
      const params: FineTuneParams = {
        modelId: model.id,
        conceptId: concept.id,
        contributionId: contribution.id,
        steps,
        learningRate: request.learningRate ?? TRAINING_DEFAULTS[request.method].learningRate,
        method,
        rank,
        seed: request.seed ?? randomInt(2 ** 32),
        batchSize: request.batchSize ?? BATCH_DEFAULTS.batchSize,
        gradientAccumulation: request.gradientAccumulation ?? BATCH_DEFAULTS.gradientAccumulation,
        centerCrop: request.centerCrop ?? BATCH_DEFAULTS.centerCrop,
        flip: request.flip ?? BATCH_DEFAULTS.flip,
        preview: previewSettings(request, steps),
      };
      await admitJob(tx, user, config.jobLimits);
      // The new version's weights take about what the head's do (a first fine-tune's are not known yet).
      const head = model.headVersionId ? await tx.getRepository(ModelVersion).findOneByOrFail({ id: model.headVersionId }) : null;
      const previews = previewCount(params.preview, steps) * pngBytesBound({ numImages: 1, width: null, height: null }, base.geometry.nativeSize);
      // Copies of reused photos are rows of this transaction already: counted as stored.
      await admitStorage(tx, user.id, config.jobLimits.storageBytes, (head?.bytes ?? 0) + previews);
      const jobs = tx.getRepository(Job);
      const job = await jobs.save(jobs.create({ type: JobType.FINETUNE, ownerId: user.id, params: { ...params }, steps: params.steps }));
      await attachJobWebhook(tx, job.id, user.id, webhook);
      await publishModelEvent(tx, { modelId: model.id, type: ModelEventType.CONTRIBUTION_QUEUED, contributionId: contribution.id, versionId: null, jobId: job.id });
      return { job, model, concept, contribution };
    });
  } catch (error) {
    await deleteObjects(store, copies);
    throw error;
  }
  try {
    await queue.send(JobType.FINETUNE, [started.job.id]);
  } catch (error) {
    await undoStart(db, started.job, !existing, copies);
    await deleteObjects(store, copies);
    throw error;
  }
  return started;
}

/**
 * The user's own photos of a concept they see (of a private model, or one they contributed to a
 * metamodel), to teach it again without uploading them: the original workflow fits a private model
 * first, then teaches the same subject to a metamodel. Checked against the target's training size.
 */
async function reusablePhotos(db: DataSource, user: User, conceptId: string, resolution: number): Promise<InstanceImage[]> {
  const concept = await getConcept(db, user, parseId(conceptId, 'fromConceptId'));
  const photos = await db.getRepository(InstanceImage).find({ where: { conceptId: concept.id, ownerId: user.id }, order: { createdAt: 'ASC' } });
  if (!photos.length) throw badInput('fromConceptId: the concept has no photos of yours');
  const small = photos.filter((p) => photoSizeProblem(p, resolution));
  if (small.length) throw badInput(`fromConceptId: ${small.length} of its photos ${small.length > 1 ? 'are' : 'is'} ${photoSizeProblem(small[0], resolution)}`);
  return photos;
}

type PhotoCopy = Pick<InstanceImage, 'objectKey' | 'sha256' | 'bytes' | 'width' | 'height' | 'ownerId'>;

async function copyPhotos(store: ObjectStore, user: User, photos: InstanceImage[]): Promise<PhotoCopy[]> {
  const copies: PhotoCopy[] = [];
  try {
    for (const photo of photos) {
      const format = photo.objectKey.split('.').pop(); // as addInstanceImage names the object
      const objectKey = `instance-images/${user.id}/${randomUUID()}.${format}`;
      await store.put(objectKey, await store.get(photo.objectKey), `image/${format}`);
      copies.push({ objectKey, sha256: photo.sha256, bytes: photo.bytes, width: photo.width, height: photo.height, ownerId: user.id });
    }
  } catch (error) {
    await deleteObjects(store, copies);
    throw error;
  }
  return copies;
}

/** Objects no row names any more; a failure leaves them unreferenced, never a row without its object. */
async function deleteObjects(store: ObjectStore, objects: { objectKey: string }[]): Promise<void> {
  for (const { objectKey } of objects) await store.delete(objectKey).catch(() => {});
}

/** What startFineTune made, read again by its job's id (a retry with the same idempotency key). */
export async function getStartedFineTune(db: DataSource, user: User, jobId: string): Promise<StartedFineTune> {
  const job = await getJob(db, user, jobId);
  const { modelId, conceptId, contributionId } = job.params as unknown as FineTuneParams;
  const [model, concept, contribution] = await Promise.all([
    db.getRepository(Model).findOneBy({ id: modelId }),
    db.getRepository(Concept).findOneBy({ id: conceptId }),
    db.getRepository(Contribution).findOneBy({ id: contributionId }),
  ]);
  // The model may have been deleted since, taking its concept and contribution along.
  if (!model || !concept || !contribution) throw notFound('Fine-tune');
  return { job, model, concept, contribution };
}

/** The metamodel a request names, checked for the user; undefined when the request makes a new model. */
async function existingTarget(
  db: DataSource,
  user: User,
  request: z.output<typeof FineTuneInput>,
): Promise<Model | undefined> {
  if (request.modelId == null) {
    if (request.target === ModelKind.META) throw badInput('modelId: name the public metamodel to contribute to');
    if (request.baseModelId == null) throw badInput('baseModelId: required for a new model');
    return undefined;
  }
  if (request.target === ModelKind.PRIVATE) throw badInput('modelId: a PRIVATE fine-tune makes a new model; give baseModelId');
  if (request.baseModelId != null) throw badInput('baseModelId: the model’s own base model is used; leave it out');
  // Contributing to the public metamodel needs only seeing it; a private metamodel, owning it.
  const model = request.target === ModelKind.META
    ? await getModel(db, user, parseId(request.modelId, 'modelId'))
    : await getModelToChange(db, user, request.modelId, 'modelId');
  if (model.kind !== request.target) throw badInput(`modelId: the model is ${model.kind}, not ${request.target}`);
  return model;
}

async function createTarget(tx: EntityManager, user: User, request: z.output<typeof FineTuneInput>, baseModel: BaseModel): Promise<Model> {
  const models = tx.getRepository(Model);
  return models.save(
    models.create({
      name: request.name ?? request.category,
      kind: request.target,
      ownerId: user.id,
      baseModelId: baseModel.id,
      headVersionId: null,
    }),
  );
}

function lockModel(tx: EntityManager, id: string): Promise<Model> {
  return tx.getRepository(Model).findOneOrFail({ where: { id }, lock: { mode: 'pessimistic_write' } });
}

/**
 * The method (and a LoRA's rank) of the fine-tune a request starts on `model`: a model's versions share
 * one method, so each is one weights object over the base (a LoRA cannot be stacked on a full UNet, nor
 * a UNet trained over a LoRA), and a LoRA continues at its own rank. What the model's versions and its
 * waiting fine-tunes established is inherited when the request leaves it out, refused when it differs.
 */
async function trainingMethod(
  tx: EntityManager,
  store: ObjectStore,
  model: Model,
  request: Pick<z.output<typeof FineTuneInput>, 'method' | 'rank'>,
): Promise<{ method: FineTuneMethod; rank: number | null }> {
  const first = await tx.getRepository(ModelVersion).findOne({ where: { modelId: model.id }, order: { number: 'ASC' } });
  const waiting = (
    await tx
      .getRepository(Job)
      .createQueryBuilder('job')
      .where(`job.type = :type AND job.params->>'modelId' = :modelId`, { type: JobType.FINETUNE, modelId: model.id })
      .andWhere('job.status IN (:...waiting)', { waiting: [JobStatus.QUEUED, JobStatus.RUNNING] })
      .orderBy('job.createdAt', 'ASC')
      .getOne()
  )?.params as FineTuneParams | undefined;
  const method = first?.method ?? waiting?.method;
  if (method && method !== request.method) throw badInput(`method: this model is fine-tuned with ${method}`);
  if (request.method !== FineTuneMethod.LORA) return { method: request.method, rank: null };

  const head = model.headVersionId ? await tx.getRepository(ModelVersion).findOneByOrFail({ id: model.headVersionId }) : null;
  const rank = (head?.weightsKey && (await storedLoraRank(store, head.weightsKey))) || waiting?.rank;
  if (rank && request.rank != null && request.rank !== rank) {
    throw badInput(`rank: this model's LoRA has rank ${rank}; leave rank out to continue it`);
  }
  return { method: request.method, rank: rank ?? request.rank ?? DEFAULT_LORA_RANK };
}

/** The rank of a stored LoRA, from its safetensors header alone. */
async function storedLoraRank(store: ObjectStore, key: string): Promise<number | undefined> {
  return loraRank(await readSafetensorsHeader((start, end) => store.getRange(key, start, end)));
}

/** The user's own photos not yet part of a concept, large enough to train on. */
async function claimablePhotos(tx: EntityManager, user: User, ids: string[], resolution: number): Promise<InstanceImage[]> {
  const photos = await tx.getRepository(InstanceImage).find({ where: { id: In(ids), ownerId: user.id } });
  if (photos.length !== ids.length) throw notFound('Instance image');
  const used = photos.filter((p) => p.conceptId !== null);
  if (used.length) throw badInput(`instanceImageIds: ${used.map((p) => p.id).join(', ')} already belong to a concept`);
  const small = photos.filter((p) => photoSizeProblem(p, resolution));
  if (small.length) throw badInput(`instanceImageIds: ${small.map((p) => p.id).join(', ')} ${small.length > 1 ? 'are' : 'is'} ${photoSizeProblem(small[0], resolution)}`);
  return photos;
}

/**
 * The queue refused the job: withdraw what the request wrote (the model too, if it made one), staged
 * photos back to staged, copies of reused ones gone.
 */
async function undoStart(db: DataSource, job: Job, madeModel: boolean, copies: PhotoCopy[]): Promise<void> {
  const params = job.params as unknown as FineTuneParams;
  await db.transaction(async (tx) => {
    await tx.getRepository(Job).delete(job.id);
    if (copies.length) await tx.getRepository(InstanceImage).delete({ objectKey: In(copies.map((c) => c.objectKey)) });
    await tx.getRepository(InstanceImage).update({ conceptId: params.conceptId }, { conceptId: null });
    await tx.getRepository(Concept).delete(params.conceptId); // the contribution cascades
    if (madeModel) await tx.getRepository(Model).delete(params.modelId);
  });
}

/** Concepts a model has learned and still offers, oldest first: those of its merged contributions. */
export async function learnedConcepts(db: DataSource | EntityManager, modelId: string, except?: string): Promise<Concept[]> {
  const concepts = await db
    .getRepository(Concept)
    .createQueryBuilder('concept')
    .innerJoin(Contribution, 'contribution', 'contribution.conceptId = concept.id')
    .where('concept.modelId = :modelId AND contribution.status = :merged', { modelId, merged: ContributionStatus.MERGED })
    .orderBy('concept.createdAt', 'ASC')
    .getMany();
  return concepts.filter((concept) => concept.id !== except);
}
