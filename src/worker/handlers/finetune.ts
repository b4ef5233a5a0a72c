import { randomUUID } from 'node:crypto';
import { In } from 'typeorm';
import {
  DEFAULT_LORA_RANK, DreamBoothError, imageGeometry, ImageInputError, parseLoraFile, parseUNetWeights, serializeLora,
  serializeUNet, trainDreamBooth, type EngineWorker, type StableDiffusionModels, type TrainingStart,
} from '../../engine';
import { BaseModel, Concept, Contribution, ContributionStatus, FineTuneMethod, InstanceImage, Job, Model, ModelKind, ModelVersion } from '../../entities';
import { loadBaseModelPack } from '../../services/base-models';
import { splitPriorImages, type PriorSplit } from '../../services/big-split';
import type { Services } from '../../services/container';
import { FineTuneFailure, fineTuneParams, learnedConcepts, type FineTuneParams } from '../../services/finetune';
import { TrainingImages } from '../../services/training-images';
import { ModelEventType, publishModelEvent } from '../../services/model-events';
import { appendVersion, lockVersions } from '../../services/versions';
import { JobCheckpoints } from '../checkpoints';
import { checkpointWeights, PreviewRenderer } from '../previews';
import type { JobHandler, JobRun } from '../job-runner';

/**
 * Fine-tune jobs: the BIG prior-preservation split over the model's learned concepts, DreamBooth
 * training on the engine, and the result as a new immutable version at the head. Runs on one model
 * are serialized by an advisory lock (see `lockVersions`), so concurrent contributions to a metamodel
 * chain one after another. Training saves checkpoints (JobCheckpoints) every FINETUNE_CHECKPOINT_STEPS
 * and when the worker stops, and a job handed back or taken from a dead worker continues from its newest.
 */
export class FineTuneHandler implements JobHandler {
  constructor(
    private readonly services: Services,
    private readonly engine: EngineWorker,
  ) {}

  async work(job: Job, run: JobRun): Promise<void> {
    const { db, store } = this.services;
    const params = fineTuneParams(job);
    const unlock = await lockVersions(db, params.modelId, run.signal);
    let finished = false;
    try {
      await run.checkStillRunning();
      await db.transaction(async (tx) => {
        await tx.getRepository(Contribution).update(params.contributionId, { status: ContributionStatus.TRAINING });
        await publishModelEvent(tx, { modelId: params.modelId, type: ModelEventType.TRAINING, contributionId: params.contributionId, versionId: null, jobId: job.id });
      });
      const result = await this.#train(job.id, params, run);
      try {
        finished = await run.finish(async (tx) => {
          const version = await appendVersion(tx, params.modelId, result.fromVersionId, {
            weightsKey: result.weightsKey,
            bytes: result.bytes,
            method: params.method,
            contributionId: params.contributionId,
          });
          await tx.getRepository(Contribution).update(params.contributionId, { status: ContributionStatus.MERGED, resultingVersionId: version.id });
          await publishModelEvent(tx, {
            modelId: params.modelId, type: ModelEventType.VERSION_APPENDED, contributionId: params.contributionId, versionId: version.id, jobId: job.id,
          });
        });
      } finally {
        // Weights no version names (canceled meanwhile, or the transaction failed) would never be read.
        if (!finished) await store.delete(result.weightsKey).catch(() => {});
      }
    } finally {
      await unlock();
    }
    // Otherwise the job may go on elsewhere from them; the sweep deletes those of jobs that ended.
    if (finished) await JobCheckpoints.clear(store, job.id);
  }

  userMessage(error: unknown): string {
    if (error instanceof FineTuneFailure || error instanceof DreamBoothError) return error.message;
    if (error instanceof ImageInputError) return `A training photo cannot be used: ${error.message}`;
    return 'Fine-tuning failed';
  }

  async close(): Promise<void> {}

  /**
   * Everything between the lock and the new version: reads the model as it is now (the head, the
   * learned concepts), trains on top of the head, and stores the weights under a new key.
   */
  async #train(jobId: string, params: FineTuneParams, run: JobRun) {
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
    await this.#recordSplit(jobId, params.contributionId, split);

    const models = await loadBaseModelPack(store, baseModel.storageLocation);
    const resolution = imageGeometry(models).nativeSize;
    const images = new TrainingImages(this.services, this.engine, resolution);
    const instance = await images.photos(concept.id, `a ${concept.token} ${concept.category}`);
    const prior = await images.prior(split, baseModel.id, models, run.signal);
    if (images.warnings.length) await this.#recordSplit(jobId, params.contributionId, { ...split, warnings: [...split.warnings, ...images.warnings] });

    const rank = params.rank ?? DEFAULT_LORA_RANK;
    const checkpoints = new JobCheckpoints(store, jobId, head?.id ?? null, this.services.config.checkpoints);
    const resume = await checkpoints.newest();
    const previews = params.preview && new PreviewRenderer(this.services, this.engine, models, jobId, params.preview, params.seed);
    const loraRank = params.method === FineTuneMethod.LORA ? rank : null;
    try {
      // A worker that stopped while drawing a round saved its checkpoint first: the round is drawn here, from it.
      if (resume && previews?.due(resume.step)) await previews.render(resume.step, checkpointWeights(resume, loraRank), run);
      const result = await trainDreamBooth(
        models,
        {
          instance,
          prior,
          method: params.method === FineTuneMethod.LORA ? { kind: 'lora', rank } : { kind: 'full' },
          steps: params.steps,
          learningRate: params.learningRate,
          batchSize: params.batchSize,
          gradientAccumulation: params.gradientAccumulation,
          crop: params.centerCrop ? 'center' : 'random',
          flip: params.flip,
          seed: params.seed,
          resolution,
          start: head?.weightsKey && !resume ? await this.#start(head, models) : undefined,
          resume,
        },
        {
          worker: this.engine,
          onStep: (step) => run.progress(step),
          signal: run.signal,
          checkpoints: {
            every: checkpointInterval(this.services.config.checkpoints.every, params.preview?.every),
            // A preview step checkpoints too: the engine counts any save as the run's latest, so a worker that stops there hands on from it.
            save: async (checkpoint) => {
              await checkpoints.save(checkpoint);
              if (previews?.due(checkpoint.step) && !run.stopping.aborted) await previews.render(checkpoint.step, checkpointWeights(checkpoint, loraRank), run);
            },
          },
          drain: run.stopping,
        },
      );
      // The engine saves no checkpoint after the last step; its preview comes from the result.
      if (previews?.due(params.steps)) {
        await previews.render(params.steps, result.lora ? { lora: parseLoraFile(serializeLora(result.lora, rank)) } : { unet: result.unet! }, run);
      }
      const bytes = result.lora ? serializeLora(result.lora, rank) : serializeUNet(models, result.unet!);
      const weightsKey = `models/${model.id}/weights/${randomUUID()}.safetensors`;
      await store.put(weightsKey, bytes);
      return { weightsKey, bytes: bytes.length, fromVersionId: head?.id ?? null };
    } finally {
      await previews?.close();
    }
  }

  /** The split on the contribution, and its warnings on the job too: the contribution's record is not where a user watching the run looks. */
  async #recordSplit(jobId: string, contributionId: string, split: PriorSplit): Promise<void> {
    const { db } = this.services;
    await db.getRepository(Contribution).update(contributionId, { priorSplit: { ...split } });
    await db.getRepository(Job).update(jobId, { warnings: split.warnings });
  }

  /** The head's weights, where this training continues from. */
  async #start(head: ModelVersion, models: StableDiffusionModels): Promise<TrainingStart> {
    const bytes = await this.services.store.get(head.weightsKey!);
    return head.method === FineTuneMethod.LORA ? { lora: parseLoraFile(bytes) } : { unet: parseUNetWeights(models, bytes) };
  }
}

/** Steps between the run's saves: every checkpoint step and every preview step (0: none but a stopping worker's). */
function checkpointInterval(checkpointEvery: number, previewEvery: number | undefined): number {
  if (!previewEvery) return checkpointEvery;
  if (!checkpointEvery) return previewEvery;
  const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);
  return gcd(checkpointEvery, previewEvery);
}
