import {
  generateClassImages, ImageInputError, loadTrainingPicture, Txt2ImgPipeline, type EngineWorker, type Example, type StableDiffusionModels,
} from '../engine';
import { isMissing } from '../storage/object-store';
import { InstanceImage } from '../entities';
import type { PriorSplit } from './big-split';
import type { Services } from './container';
import { FineTuneFailure } from './finetune';

/** Denoising steps of generated class images: diffusers' DreamBooth scripts use the pipeline's default, 50. */
const CLASS_IMAGE_STEPS = 50;
/** Class image i of a (base model, category) is generated with seed i, so the cache only ever grows. */
const CLASS_IMAGE_SEED = 0;

/** Generated class images, shared by every user and job of a base model. */
export function classImageKey(baseModelId: string, category: string, index: number): string {
  return `class-images/${baseModelId}/${encodeURIComponent(category)}/${index}.png`;
}

/**
 * The images a fine-tune trains on, at the model's training resolution: the concept's own photos,
 * and the prior-preservation images of its BIG split, which are class images (generated once per base
 * model and category, then cached in the object store for everyone) and replayed photos of the
 * concepts the model learned before. Photos are decoded once and kept (their owners may delete them
 * while someone else's training replays them); class images, most of the prior images (up to one per
 * step), are read from the store whenever the training encodes one.
 */
export class TrainingImages {
  /** Why the prior images are fewer than the split planned: replayed photos that could not be used. */
  readonly warnings: string[] = [];

  constructor(
    private readonly services: Pick<Services, 'db' | 'store'>,
    private readonly engine: EngineWorker,
    private readonly resolution: number,
  ) {}

  /** The photos of the concept being trained, as training examples; one that cannot be used fails the training. */
  async photos(conceptId: string, prompt: string): Promise<Example[]> {
    const photos = await this.#stored(conceptId);
    if (photos.length === 0) throw new FineTuneFailure('The concept has no photos to train on');
    return Promise.all(photos.map(async (p) => {
      const picture = await loadTrainingPicture(await this.services.store.get(p.objectKey), this.resolution);
      return { image: async () => picture, prompt };
    }));
  }

  /**
   * `count` examples of an earlier concept's photos (cycled), replayed in the prior images. A photo that
   * cannot be used (gone from the store, or one an older version let in) is skipped with a warning: it
   * must never fail the training of whoever contributes next.
   */
  async #replayed(conceptId: string, prompt: string, count: number): Promise<Example[]> {
    const usable: Example['image'][] = [];
    for (const photo of await this.#stored(conceptId)) {
      try {
        const picture = await loadTrainingPicture(await this.services.store.get(photo.objectKey), this.resolution);
        usable.push(async () => picture);
      } catch (error) {
        if (!(error instanceof ImageInputError) && !isMissing(error)) throw error;
        this.warnings.push(`A stored photo of "${prompt}" cannot be replayed and was skipped (${isMissing(error) ? 'it is gone from storage' : (error as Error).message}).`);
      }
    }
    if (usable.length === 0) {
      this.warnings.push(`"${prompt}" has no usable photo left to replay; its ${count} prior images are left out.`);
      return [];
    }
    return Array.from({ length: count }, (_, i) => ({ image: usable[i % usable.length], prompt }));
  }

  #stored(conceptId: string): Promise<InstanceImage[]> {
    return this.services.db.getRepository(InstanceImage).find({ where: { conceptId }, order: { createdAt: 'ASC' } });
  }

  /** The split's parts as examples: cached class images of each category, replayed photos of learned concepts. */
  async prior(split: PriorSplit, baseModelId: string, models: StableDiffusionModels, signal: AbortSignal): Promise<Example[]> {
    const examples: Example[] = [];
    let pipeline: Txt2ImgPipeline | undefined;
    try {
      for (const part of split.parts) {
        if (part.images === 0) continue;
        if (part.source === 'instance') {
          examples.push(...(await this.#replayed(part.conceptId, `a ${part.token} ${part.category}`, part.images)));
          continue;
        }
        const generator = () => (pipeline ??= new Txt2ImgPipeline(models, this.engine));
        examples.push(...(await this.#classImages(generator, baseModelId, part.category, part.images, signal)));
      }
    } finally {
      await pipeline?.close();
    }
    return examples;
  }

  /** `count` class images of `category`, generating the ones the cache lacks with `generator()`'s pipeline. */
  async #classImages(generator: () => Txt2ImgPipeline, baseModelId: string, category: string, count: number, signal: AbortSignal): Promise<Example[]> {
    const { store } = this.services;
    const prompt = `a ${category}`;
    const keys = Array.from({ length: count }, (_, i) => classImageKey(baseModelId, category, i));
    let have = 0;
    while (have < keys.length && (await store.exists(keys[have]))) have++;
    if (have < keys.length) {
      const pngs = await generateClassImages(
        generator(),
        { prompt, count: keys.length - have, seed: CLASS_IMAGE_SEED + have, steps: CLASS_IMAGE_STEPS, width: this.resolution, height: this.resolution },
        { signal },
      );
      for (const [i, png] of pngs.entries()) await store.put(keys[have + i], png, 'image/png');
    }
    return keys.map((key) => ({ image: async () => loadTrainingPicture(await store.get(key), this.resolution), prompt }));
  }
}
