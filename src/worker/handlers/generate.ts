import {
  encodePngs, parseLoraFile, parseUNetWeights, Txt2ImgError, Txt2ImgPipeline, withUNetWeights, type EngineWorker, type LoraLayer,
} from '../../engine';
import { Image, type Job } from '../../entities';
import { loadBaseModelPack } from '../../services/base-models';
import type { Services } from '../../services/container';
import type { GenerateParams } from '../../services/jobs';
import { versionWeights } from '../../services/versions';
import type { JobHandler, JobRun } from '../job-runner';
import { PipelineCache } from '../pipeline-cache';

/** Generation jobs: txt2img on the job's pinned model version, PNGs to S3 and Image rows. */
export class GenerateHandler implements JobHandler {
  readonly #pipelines = new PipelineCache();

  constructor(
    private readonly services: Services,
    private readonly engine: EngineWorker,
  ) {}

  async work(job: Job, run: JobRun): Promise<void> {
    const params = job.params as unknown as GenerateParams;
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
      { signal: run.signal, onStep: ({ step, steps }) => run.progress({ step, steps }) },
    );
    const pngs = await encodePngs(result);
    const keys = pngs.map((_, i) => `images/${job.id}/${i}.png`);
    for (const [i, png] of pngs.entries()) await this.services.store.put(keys[i], png, 'image/png');
    const finished = await run.finish(async (tx) => {
      await tx.getRepository(Image).insert(
        keys.map((objectKey, i) => ({
          objectKey, bytes: pngs[i].length, jobId: job.id, seed: result.seed, prompt: params.prompt, width: result.width, height: result.height,
        })),
      );
    });
    // Canceled after the last step: the images were never recorded, so they go.
    if (!finished) for (const key of keys) await this.services.store.delete(key);
  }

  /** Errors whose messages speak to the user's request; anything else is ours and stays in the log. */
  userMessage(error: unknown): string {
    return error instanceof Txt2ImgError ? error.message : 'Generation failed';
  }

  async close(): Promise<void> {
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
    const lora = weights.lora ? parseLoraFile(await store.get(weights.lora)) : undefined;
    return { pipeline, lora };
  }
}
