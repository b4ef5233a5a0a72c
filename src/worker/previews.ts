import {
  encodePngs, loraFromSlots, parseLoraFile, serializeLora, Txt2ImgPipeline, withUNetWeights, type DreamBoothCheckpoint, type EngineWorker,
  type LoraLayer, type StableDiffusionModels,
} from '../engine';
import type { Services } from '../services/container';
import { hasPreviews, recordPreviews, type PreviewSettings, type StoredPreview } from '../services/previews';
import type { JobRun } from './job-runner';

/** Weights being trained, as a preview draws with them: LoRA layers over the base UNet, or a whole UNet. */
export type PreviewWeights = { lora: Map<string, LoraLayer> } | { unet: Map<string, Float32Array> };

/** The weights inside a training checkpoint: the LoRA slots (peft names) of rank `rank`, or every UNet parameter. */
export function checkpointWeights(checkpoint: DreamBoothCheckpoint, rank: number | null): PreviewWeights {
  const params = new Map(Object.entries(checkpoint.trainer.params) as [string, Float32Array][]);
  return rank === null ? { unet: params } : { lora: parseLoraFile(serializeLora(loraFromSlots(params), rank)) };
}

/**
 * Draws a fine-tune's previews: each prompt once, with the job's seed (so rounds differ only by the
 * weights), at `settings.steps` denoising steps on the base model's own sampler. A LoRA run draws on one
 * pipeline kept for the job (the LoRA is fed); a full run builds one per round around the UNet of the moment.
 */
export class PreviewRenderer {
  #lora: Txt2ImgPipeline | undefined;

  constructor(
    private readonly services: Services,
    private readonly engine: EngineWorker,
    private readonly models: StableDiffusionModels,
    private readonly jobId: string,
    private readonly settings: PreviewSettings,
    private readonly seed: number,
  ) {}

  /** Whether training step `step` (1-based) is one to preview. */
  due(step: number): boolean {
    return step % this.settings.every === 0;
  }

  /** Draws, stores and records the previews of `step`, unless the job has them already (it resumed past them). */
  async render(step: number, weights: PreviewWeights, run: JobRun): Promise<void> {
    const { db, store } = this.services;
    if (await hasPreviews(db, this.jobId, step)) return;
    const previews: StoredPreview[] = [];
    try {
      const pipeline = 'lora' in weights
        ? (this.#lora ??= new Txt2ImgPipeline(this.models, this.engine))
        : new Txt2ImgPipeline(withUNetWeights(this.models, weights.unet), this.engine);
      try {
        for (const [i, prompt] of this.settings.prompts.entries()) {
          const lora = 'lora' in weights ? { weights: weights.lora } : undefined;
          const result = await pipeline.generate({ prompt, steps: this.settings.steps, seed: this.seed, lora }, { signal: run.signal });
          const [png] = await encodePngs(result);
          const objectKey = `images/${this.jobId}/preview-${String(step).padStart(6, '0')}-${i}.png`;
          await store.put(objectKey, png, 'image/png');
          previews.push({ objectKey, bytes: png.length, prompt, seed: result.seed, width: result.width, height: result.height });
        }
      } finally {
        if (pipeline !== this.#lora) await pipeline.close();
      }
      if (await run.record((tx) => recordPreviews(tx, this.jobId, step, previews))) return;
    } catch (error) {
      await this.#discard(previews);
      throw error;
    }
    await this.#discard(previews); // the job was canceled meanwhile: no row names them
  }

  async close(): Promise<void> {
    await this.#lora?.close();
  }

  async #discard(previews: StoredPreview[]): Promise<void> {
    for (const { objectKey } of previews) await this.services.store.delete(objectKey).catch(() => {});
  }
}
