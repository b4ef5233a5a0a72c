import sharp, { type Metadata } from 'sharp';

export type ImageInputErrorCode = 'NOT_AN_IMAGE' | 'UNSUPPORTED_FORMAT' | 'TOO_SMALL';

/** Bytes that cannot become a training image; nothing was decoded into the batch. */
export class ImageInputError extends Error {
  override readonly name = 'ImageInputError';
  constructor(readonly code: ImageInputErrorCode, message: string) {
    super(message);
  }
}

/** One image ready for the VAE: [channels = 3, size, size] float32 in [-1, 1]. */
export interface TrainingPixels {
  data: Float32Array;
  size: number;
}

const FORMATS = new Set(['png', 'jpeg', 'webp']);

/**
 * A photo as diffusers' DreamBooth dataset prepares it: shorter side resized to `size`, center crop to
 * size x size, RGB, scaled to [-1, 1], NCHW. EXIF orientation is applied first (phones store it there).
 * Transparent pixels go on white: PIL's RGBA -> RGB conversion would expose whatever colour they hold.
 * An image whose shorter side is under `size` is refused rather than upscaled into blur.
 */
export async function loadTrainingImage(bytes: Uint8Array, size: number): Promise<TrainingPixels> {
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
  let raw: Buffer;
  try {
    raw = await sharp(bytes)
      .rotate()
      .flatten({ background: '#ffffff' })
      .resize(size, size, { fit: 'cover', position: 'centre', kernel: 'lanczos3' })
      .toColourspace('srgb')
      .raw()
      .toBuffer();
  } catch (error) {
    throw new ImageInputError('NOT_AN_IMAGE', `the image cannot be decoded: ${(error as Error).message}`);
  }
  const plane = size * size;
  const data = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) data[c * plane + i] = raw[i * 3 + c] / 127.5 - 1;
  }
  return { data, size };
}
