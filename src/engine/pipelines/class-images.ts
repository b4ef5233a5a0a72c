import { encodePngs, Txt2ImgError, type Txt2ImgPipeline, type Txt2ImgRequest } from './txt2img';

export interface ClassImagesRequest extends Omit<Txt2ImgRequest, 'seed' | 'latents' | 'numImages' | 'lora'> {
  /** The category's prompt, e.g. `a dog`. */
  prompt: string;
  count: number;
  /** Image i is generated with seed + i, so a larger count extends a cached set instead of replacing it. */
  seed: number;
}

export interface ClassImagesOptions {
  /** After each image: how many are done. */
  onImage?: (done: number, count: number) => void;
  /** Checked before each image; an aborted run rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Prior-preservation images of a category, made by the base model as diffusers' DreamBooth scripts make them
 * (txt2img of the class prompt), as PNG files: the platform caches them per (base model, category) and they
 * train after `loadTrainingPicture`, as the scripts reload theirs from disk.
 */
export async function generateClassImages(
  pipeline: Txt2ImgPipeline, { count, seed, ...request }: ClassImagesRequest, { onImage, signal }: ClassImagesOptions = {},
): Promise<Buffer[]> {
  if (!Number.isInteger(count) || count < 0) throw new Txt2ImgError(`count must be a non-negative integer, got ${count}`);
  if (!Number.isSafeInteger(seed + count) || seed < 0) throw new Txt2ImgError(`seed must be an integer in 0..2^53-1-count, got ${seed}`);
  const pngs: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    signal?.throwIfAborted();
    const [png] = await encodePngs(await pipeline.generate({ ...request, seed: seed + i }, { signal }));
    pngs.push(png);
    onImage?.(i + 1, count);
  }
  return pngs;
}
