import { type LoraLayer, parseUNetLora } from '../../engine/models/lora';
import { encodePngs, parseUNetWeights, Txt2ImgError, Txt2ImgPipeline, withUNetWeights, type Txt2ImgProgress } from '../../engine/pipelines';
import { parseSafetensors } from '../../engine/weights/safetensors';
import type { EngineWorker } from '../../engine/runtime';
import { Image, Job, JobStatus } from '../../entities';
import type { Services } from '../../services/container';
import { loadBaseModelPack } from '../../services/base-models';
import type { GenerateParams } from '../../services/jobs';
import { versionWeights } from '../../services/versions';
import { publishJobEvent } from '../../services/job-events';
import { failRunningJob } from '../../services/job-lifecycle';
import { PipelineCache } from '../pipeline-cache';
import { RunningJobs, WorkerStopping } from '../running-jobs';

/**
 * Runs generation jobs in a worker process: txt2img on the job's pinned model version, PNGs to S3,
 * Image rows, and the job row kept current (status, step, progress) with an event per change.
 */
export class GenerateHandler {
  readonly #pipelines = new PipelineCache();
  readonly #jobs = new RunningJobs();

  constructor(
    private readonly services: Services,
    private readonly engine: EngineWorker,
  ) {}

  run(jobId: string): Promise<void> {
    return this.#jobs.track(this.#run(jobId));
  }

  async #run(jobId: string): Promise<void> {
    const { db, log } = this.services;
    const jobs = db.getRepository(Job);
    // Only a QUEUED row starts: a job canceled while queued, or already run by another delivery, does not.
    const { affected } = await jobs.update({ id: jobId, status: JobStatus.QUEUED }, { status: JobStatus.RUNNING, startedAt: new Date() });
    if (!affected) return;
    await publishJobEvent(db, jobId, 'status');
    const job = await jobs.findOneByOrFail({ id: jobId });
    const params = job.params as unknown as GenerateParams;

    const controller = this.#jobs.start(jobId);
    const progress = this.#reporter(jobId, controller);
    try {
      const { pipeline, lora } = await this.#pipeline(params);
      const result = await pipeline.generate(
        {
          lora: lora && { weights: lora },
          prompt: params.prompt,
          negativePrompt: params.negativePrompt,
          steps: params.steps,
          guidanceScale: params.guidanceScale,
          scheduler: params.scheduler ?? undefined,
          seed: params.seed,
          width: params.width ?? undefined,
          height: params.height ?? undefined,
          numImages: params.numImages,
        },
        { signal: controller.signal, onStep: progress.onStep },
      );
      await progress.written();
      const pngs = await encodePngs(result);
      const keys = pngs.map((_, i) => `images/${jobId}/${i}.png`);
      for (const [i, png] of pngs.entries()) await this.services.store.put(keys[i], png, 'image/png');
      const finished = await db.transaction(async (tx) => {
        const done = await tx
          .getRepository(Job)
          .update({ id: jobId, status: JobStatus.RUNNING }, { status: JobStatus.SUCCEEDED, progress: 1, finishedAt: new Date() });
        if (!done.affected) return false;
        await tx.getRepository(Image).insert(
          keys.map((objectKey) => ({ objectKey, jobId, seed: result.seed, prompt: params.prompt, width: result.width, height: result.height })),
        );
        await publishJobEvent(tx, jobId, 'status');
        return true;
      });
      // Canceled after the last step: the images were never recorded, so they go.
      if (!finished) for (const key of keys) await this.services.store.delete(key);
    } catch (error) {
      if (controller.signal.reason instanceof WorkerStopping) {
        await jobs.update({ id: jobId, status: JobStatus.RUNNING }, { status: JobStatus.QUEUED, startedAt: null, step: 0, progress: 0 });
        await publishJobEvent(db, jobId, 'status');
        throw controller.signal.reason;
      }
      if (controller.signal.aborted) return; // canceled: cancelJob has recorded it
      log.error({ err: error, jobId }, 'generation failed');
      await failRunningJob(db, jobId, userMessage(error));
    } finally {
      this.#jobs.finish(jobId);
    }
  }

  /** Aborts running jobs so they return to the queue, and frees the loaded pipelines. */
  async stop(): Promise<void> {
    await this.#jobs.stop();
    await this.#pipelines.close();
  }

  /** The pipeline of the job's model version, and the LoRA to feed it when the version is one. */
  async #pipeline(params: GenerateParams): Promise<{ pipeline: Txt2ImgPipeline; lora?: Map<string, LoraLayer> }> {
    const { db, store } = this.services;
    const weights = await versionWeights(db, params.modelId, params.versionId);
    // A LoRA is fed with each run, so LoRA versions share their base model's pipeline.
    const pipeline = await this.#pipelines.get(PipelineCache.key(params.baseModelId, weights.unet ? weights.versionId : null), async () => {
      const models = await loadBaseModelPack(store, weights.basePack);
      if (!weights.unet) return new Txt2ImgPipeline(models, this.engine);
      return new Txt2ImgPipeline(withUNetWeights(models, parseUNetWeights(models, await store.get(weights.unet))), this.engine);
    });
    const lora = weights.lora ? parseUNetLora(parseSafetensors(await store.get(weights.lora))) : undefined;
    return { pipeline, lora };
  }

  /**
   * Records each step in order. The write is conditional on the job still RUNNING, so it doubles as
   * the cancellation check: once the row says otherwise the run is aborted before its next step.
   */
  #reporter(jobId: string, controller: AbortController) {
    const jobs = this.services.db.getRepository(Job);
    let pending = Promise.resolve();
    const onStep = ({ step, steps }: Txt2ImgProgress) => {
      pending = pending.then(async () => {
        if (controller.signal.aborted) return;
        const { affected } = await jobs.update({ id: jobId, status: JobStatus.RUNNING }, { step, steps, progress: step / steps });
        if (affected) await publishJobEvent(this.services.db, jobId, 'progress');
        else controller.abort(new Error('canceled'));
      }).catch((error) => this.services.log.warn({ err: error, jobId }, 'progress update failed'));
    };
    return { onStep, written: () => pending };
  }
}

/** Errors whose messages speak to the user's request; anything else is ours and stays in the log. */
function userMessage(error: unknown): string {
  return error instanceof Txt2ImgError ? error.message : 'Generation failed';
}
