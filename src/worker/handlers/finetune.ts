import { randomUUID } from 'node:crypto';
import { In } from 'typeorm';
import { Txt2ImgPipeline, loadStableDiffusion, parseUNetWeights, serializeUNet, type StableDiffusionModels } from '../../engine/pipelines';
import { generateClassImages } from '../../engine/pipelines/class-images';
import { DreamBoothError, trainDreamBooth, type DreamBoothProgress, type Example, type TrainingStart } from '../../engine/pipelines/dreambooth';
import { ImageInputError, loadTrainingImage } from '../../engine/pipelines/images';
import { serializeLora } from '../../engine/pipelines/lora-file';
import { parseUNetLora } from '../../engine/models/lora';
import type { EngineWorker } from '../../engine/runtime';
import { parseSafetensors } from '../../engine/weights/safetensors';
import { loadPack } from '../../engine/weights/pack';
import { BaseModel, Concept, Contribution, ContributionStatus, FineTuneMethod, InstanceImage, Job, JobStatus, Model, ModelKind, ModelVersion } from '../../entities';
import type { Services } from '../../services/container';
import { splitPriorImages, type PriorSplit } from '../../services/big-split';
import { learnedConcepts, withdrawContribution, type FineTuneParams } from '../../services/finetune';
import { appendVersion, lockVersions } from '../../services/versions';
import { S3PackSource } from '../../storage/s3-pack-source';
import { publishJobEvent } from '../../services/job-events';
import { failRunningJob } from '../../services/job-lifecycle';
import { RunningJobs, WorkerStopping } from '../running-jobs';

/** Denoising steps of generated class images: diffusers' DreamBooth scripts use the pipeline's default, 50. */
const CLASS_IMAGE_STEPS = 50;
/** Class image i of a (base model, category) is generated with seed i, so the cache only ever grows. */
const CLASS_IMAGE_SEED = 0;

/** A failure whose message is meant for the user (anything else is logged and reported generically). */
class FineTuneFailure extends Error {
  override readonly name = 'FineTuneFailure';
}

/**
 * Runs fine-tune jobs in a worker: the BIG prior-preservation split over the model's learned
 * concepts, class images from the shared per-(base model, category) cache, replayed photos of earlier
 * concepts, DreamBooth training on the engine, and the result as a new immutable version at the head.
 * Runs on one model are serialized by an advisory lock (see `lockVersions`), so concurrent
 * contributions to a metamodel chain one after another.
 */
export class FineTuneHandler {
  readonly #jobs = new RunningJobs();

  constructor(
    private readonly services: Services,
    private readonly engine: EngineWorker,
  ) {}

  run(jobId: string): Promise<void> {
    return this.#jobs.track(this.#run(jobId));
  }

  /** Aborts running jobs so they return to the queue. */
  async stop(): Promise<void> {
    await this.#jobs.stop();
  }

  async #run(jobId: string): Promise<void> {
    const { db, log } = this.services;
    const jobs = db.getRepository(Job);
    const { affected } = await jobs.update({ id: jobId, status: JobStatus.QUEUED }, { status: JobStatus.RUNNING, startedAt: new Date() });
    if (!affected) return;
    await publishJobEvent(db, jobId, 'status');
    const params = (await jobs.findOneByOrFail({ id: jobId })).params as unknown as FineTuneParams;
    const contributions = db.getRepository(Contribution);

    const controller = this.#jobs.start(jobId);
    const progress = this.#reporter(jobId, controller);
    let unlock: (() => Promise<void>) | undefined;
    try {
      unlock = await lockVersions(db, params.modelId, controller.signal);
      await this.#stillRunning(jobId, controller);
      await contributions.update(params.contributionId, { status: ContributionStatus.TRAINING });
      const result = await this.#train(jobId, params, progress.onStep, controller.signal);
      await progress.written();
      const finished = await db.transaction(async (tx) => {
        const done = await tx.getRepository(Job).update({ id: jobId, status: JobStatus.RUNNING }, { status: JobStatus.SUCCEEDED, progress: 1, finishedAt: new Date() });
        if (!done.affected) return false;
        const version = await appendVersion(tx, params.modelId, result.fromVersionId, {
          weightsKey: result.weightsKey,
          method: params.method,
          contributionId: params.contributionId,
        });
        await tx.getRepository(Contribution).update(params.contributionId, { status: ContributionStatus.MERGED, resultingVersionId: version.id });
        await publishJobEvent(tx, jobId, 'status');
        return true;
      });
      if (!finished) {
        await this.services.store.delete(result.weightsKey);
        await withdrawContribution(db, params.contributionId);
      }
    } catch (error) {
      if (controller.signal.reason instanceof WorkerStopping) {
        await contributions.update(params.contributionId, { status: ContributionStatus.PENDING });
        await jobs.update({ id: jobId, status: JobStatus.RUNNING }, { status: JobStatus.QUEUED, startedAt: null, step: 0, progress: 0, loss: null });
        await publishJobEvent(db, jobId, 'status');
        throw controller.signal.reason;
      }
      if (controller.signal.aborted) {
        await withdrawContribution(db, params.contributionId); // canceled: cancelJob has recorded the job
        return;
      }
      log.error({ err: error, jobId }, 'fine-tune failed');
      await failRunningJob(db, jobId, userMessage(error));
    } finally {
      this.#jobs.finish(jobId);
      await unlock?.();
    }
  }

  /**
   * Everything between the lock and the new version: reads the model as it is now (the head, the
   * learned concepts), trains on top of the head, and stores the weights under a new key.
   */
  async #train(jobId: string, params: FineTuneParams, onStep: (p: DreamBoothProgress) => void, signal: AbortSignal) {
    const { db, store } = this.services;
    const model = await db.getRepository(Model).findOneByOrFail({ id: params.modelId });
    const concept = await db.getRepository(Concept).findOneByOrFail({ id: params.conceptId });
    const baseModel = await db.getRepository(BaseModel).findOneByOrFail({ id: model.baseModelId });
    const head = model.headVersionId ? await db.getRepository(ModelVersion).findOneByOrFail({ id: model.headVersionId }) : null;
    if (head && head.method !== params.method) throw new FineTuneFailure(`This model is fine-tuned with ${head.method}; start a ${head.method} fine-tune`);

    const learned = await learnedConcepts(db, model.id, concept.id);
    const withPhotos = new Set(
      (await db.getRepository(InstanceImage).find({ where: { conceptId: In(learned.map((c) => c.id)) }, select: { conceptId: true } })).map((p) => p.conceptId),
    );
    const split = splitPriorImages({
      priorImages: params.steps,
      category: concept.category,
      learned: learned.map((c) => ({ conceptId: c.id, token: c.token, category: c.category, replayable: withPhotos.has(c.id) })),
      meta: model.kind !== ModelKind.PRIVATE,
    });
    await db.getRepository(Contribution).update(params.contributionId, { priorSplit: { ...split } });
    // On the job too: the contribution's record is not where a user watching the run looks.
    await db.getRepository(Job).update(jobId, { warnings: split.warnings });

    const pack = await loadPack(new S3PackSource(store, baseModel.storageLocation));
    const models = await loadStableDiffusion(pack);
    const resolution = models.unet.sampleSize * 2 ** (models.vae.config.block_out_channels.length - 1);
    const instance = await this.#photos(concept.id, resolution, `a ${concept.token} ${concept.category}`);
    const prior = await this.#priorExamples(split, baseModel, models, resolution, signal);

    const result = await trainDreamBooth(
      models,
      {
        instance,
        prior,
        method: params.method === FineTuneMethod.LORA ? { kind: 'lora', rank: params.rank ?? 4 } : { kind: 'full' },
        steps: params.steps,
        learningRate: params.learningRate,
        seed: params.seed,
        resolution,
        start: head?.weightsKey ? await this.#start(head, models) : undefined,
      },
      { worker: this.engine, onStep, signal },
    );
    const bytes = result.lora ? serializeLora(result.lora, params.rank ?? 4) : serializeUNet(models, result.unet!);
    const weightsKey = `models/${model.id}/weights/${randomUUID()}.safetensors`;
    await store.put(weightsKey, bytes);
    return { weightsKey, fromVersionId: head?.id ?? null };
  }

  /** A concept's stored photos as training examples, cycled to `count` when given. */
  async #photos(conceptId: string, resolution: number, prompt: string, count?: number): Promise<Example[]> {
    const photos = await this.services.db.getRepository(InstanceImage).find({ where: { conceptId }, order: { createdAt: 'ASC' } });
    if (photos.length === 0) throw new FineTuneFailure('The concept has no photos to train on');
    const pixels = await Promise.all(photos.map(async (p) => loadTrainingImage(await this.services.store.get(p.objectKey), resolution)));
    const n = count ?? pixels.length;
    return Array.from({ length: n }, (_, i) => ({ pixels: pixels[i % pixels.length], prompt }));
  }

  /** The split's parts as examples: cached class images of each category, replayed photos of learned concepts. */
  async #priorExamples(split: PriorSplit, baseModel: BaseModel, models: StableDiffusionModels, resolution: number, signal: AbortSignal): Promise<Example[]> {
    const examples: Example[] = [];
    let pipeline: Txt2ImgPipeline | undefined;
    try {
      for (const part of split.parts) {
        if (part.images === 0) continue;
        if (part.source === 'instance') {
          examples.push(...(await this.#photos(part.conceptId, resolution, `a ${part.token} ${part.category}`, part.images)));
          continue;
        }
        const keys = Array.from({ length: part.images }, (_, i) => classImageKey(baseModel.id, part.category, i));
        let have = 0;
        while (have < keys.length && (await this.services.store.exists(keys[have]))) have++;
        if (have < keys.length) {
          pipeline ??= new Txt2ImgPipeline(models, this.engine);
          const pngs = await generateClassImages(
            pipeline,
            { prompt: `a ${part.category}`, count: keys.length - have, seed: CLASS_IMAGE_SEED + have, steps: CLASS_IMAGE_STEPS, width: resolution, height: resolution },
            { signal },
          );
          for (const [i, png] of pngs.entries()) await this.services.store.put(keys[have + i], png, 'image/png');
        }
        for (const key of keys) {
          examples.push({ pixels: await loadTrainingImage(await this.services.store.get(key), resolution), prompt: `a ${part.category}` });
        }
      }
    } finally {
      await pipeline?.close();
    }
    return examples;
  }

  /** The head's weights, where this training continues from. */
  async #start(head: ModelVersion, models: StableDiffusionModels): Promise<TrainingStart> {
    const bytes = await this.services.store.get(head.weightsKey!);
    return head.method === FineTuneMethod.LORA ? { lora: parseUNetLora(parseSafetensors(bytes)) } : { unet: parseUNetWeights(models, bytes) };
  }

  async #stillRunning(jobId: string, controller: AbortController): Promise<void> {
    const job = await this.services.db.getRepository(Job).findOneByOrFail({ id: jobId });
    if (job.status !== JobStatus.RUNNING) controller.abort(new Error('canceled'));
    controller.signal.throwIfAborted();
  }

  /**
   * Records each step's loss in order. The write is conditional on the job still RUNNING, so it
   * doubles as the cancellation check.
   */
  #reporter(jobId: string, controller: AbortController) {
    const { db, log } = this.services;
    const jobs = db.getRepository(Job);
    let pending = Promise.resolve();
    const onStep = ({ step, steps, loss }: DreamBoothProgress) => {
      pending = pending
        .then(async () => {
          if (controller.signal.aborted) return;
          const { affected } = await jobs.update({ id: jobId, status: JobStatus.RUNNING }, { step, steps, loss, progress: step / steps });
          if (affected) await publishJobEvent(db, jobId, 'progress');
          else controller.abort(new Error('canceled'));
        })
        .catch((error) => log.warn({ err: error, jobId }, 'progress update failed'));
    };
    return { onStep, written: () => pending };
  }
}

/** Generated class images, shared by every user and job of a base model. */
export function classImageKey(baseModelId: string, category: string, index: number): string {
  return `class-images/${baseModelId}/${encodeURIComponent(category)}/${index}.png`;
}

function userMessage(error: unknown): string {
  if (error instanceof FineTuneFailure || error instanceof DreamBoothError) return error.message;
  if (error instanceof ImageInputError) return `A training photo cannot be used: ${error.message}`;
  return 'Fine-tuning failed';
}
