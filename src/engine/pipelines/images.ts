import sharp, { type Metadata } from 'sharp';

export type ImageInputErrorCode = 'NOT_AN_IMAGE' | 'UNSUPPORTED_FORMAT' | 'TOO_SMALL';

/** Bytes that cannot become a training image; nothing was decoded into the batch. */
export class ImageInputError extends Error {
  override readonly name = 'ImageInputError';
  constructor(readonly code: ImageInputErrorCode, message: string) {
    super(message);
  }
}

/**
 * A photo at the training scale, before cropping: its shorter side is the training resolution, the aspect
 * ratio kept, 8-bit RGB in rows (HWC). A quarter of the float pixels it crops to, and only the longer side
 * is larger than the crop.
 */
export interface TrainingPicture {
  data: Uint8Array;
  width: number;
  height: number;
}

/** One image ready for the VAE: [channels = 3, size, size] float32 in [-1, 1]. */
export interface TrainingPixels {
  data: Float32Array;
  size: number;
}

/**
 * Which square of a picture trains, as diffusers' DreamBooth dataset picks it: `crop` 'center' (its
 * `--center_crop`) or a uniform draw in [0, 1) placing a random crop along the longer side (torchvision's
 * RandomCrop, the scripts' default), then mirrored left to right when `flip`.
 */
export interface TrainingView {
  crop: 'center' | number;
  flip: boolean;
}

const FORMATS = new Set(['png', 'jpeg', 'webp']);

/**
 * A photo as diffusers' DreamBooth dataset resizes it: the shorter side to `size` (lanczos3; the longer
 * side as torchvision's Resize rounds it, down), RGB. EXIF orientation is applied first (phones store it
 * there). Transparent pixels go on white: PIL's RGBA -> RGB conversion would expose whatever colour they
 * hold. An image whose shorter side is under `size` is refused rather than upscaled into blur.
 */
export async function loadTrainingPicture(bytes: Uint8Array, size: number): Promise<TrainingPicture> {
  let metadata: Metadata;
  try {
    metadata = await sharp(bytes).metadata();
  } catch {
    throw new ImageInputError('NOT_AN_IMAGE', 'the file is not an image sharp can read');
  }
  if (!metadata.format || !FORMATS.has(metadata.format)) {
    throw new ImageInputError('UNSUPPORTED_FORMAT', `images must be PNG, JPEG or WebP, got ${metadata.format ?? 'an unknown format'}`);
  }
  const rotated = (metadata.orientation ?? 1) >= 5;
  const width = rotated ? metadata.height : metadata.width;
  const height = rotated ? metadata.width : metadata.height;
  if (Math.min(width, height) < size) {
    throw new ImageInputError('TOO_SMALL', `the image is ${width}x${height}; its shorter side must be at least ${size} pixels`);
  }
  const scaled = width <= height
    ? { width: size, height: Math.max(size, Math.floor((height * size) / width)) }
    : { width: Math.max(size, Math.floor((width * size) / height)), height: size };
  try {
    const data = await sharp(bytes)
      .rotate()
      .flatten({ background: '#ffffff' })
      .resize(scaled.width, scaled.height, { fit: 'fill', kernel: 'lanczos3' })
      .toColourspace('srgb')
      .raw()
      .toBuffer();
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), ...scaled };
  } catch (error) {
    throw new ImageInputError('NOT_AN_IMAGE', `the image cannot be decoded: ${(error as Error).message}`);
  }
}

/** Where `view`'s square of `size` starts in a picture: [left, top]. */
export function cropOrigin(picture: Pick<TrainingPicture, 'width' | 'height'>, size: number, { crop }: Pick<TrainingView, 'crop'>): [number, number] {
  const slack = Math.max(picture.width, picture.height) - size;
  // torchvision: CenterCrop rounds half the slack, RandomCrop draws an integer in [0, slack].
  const offset = crop === 'center' ? Math.round(slack / 2) : Math.floor(crop * (slack + 1));
  return picture.width > picture.height ? [offset, 0] : [0, offset];
}

/** The `size` x `size` square of `view`, scaled to [-1, 1] NCHW, as the scripts' ToTensor and Normalize([0.5], [0.5]). */
export function trainingPixels(picture: TrainingPicture, size: number, view: TrainingView): TrainingPixels {
  if (Math.min(picture.width, picture.height) !== size || picture.data.length !== picture.width * picture.height * 3) {
    throw new RangeError(`the picture is ${picture.width}x${picture.height}; load it at the training resolution ${size}`);
  }
  const [left, top] = cropOrigin(picture, size, view);
  const plane = size * size;
  const data = new Float32Array(3 * plane);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const from = ((top + y) * picture.width + left + (view.flip ? size - 1 - x : x)) * 3;
      for (let c = 0; c < 3; c++) data[c * plane + y * size + x] = picture.data[from + c] / 127.5 - 1;
    }
  }
  return { data, size };
}
