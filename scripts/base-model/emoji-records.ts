import { readFile, writeFile } from 'node:fs/promises';
import { gunzipSync, gzipSync } from 'node:zlib';
import { type Rng } from '../../src/engine/random';

/** Training images are 64 px: the emoji sets' own smallest size, and a side a 2x VAE turns into 32x32 latents. */
export const IMAGE_SIZE = 64;

export interface EmojiRecord {
  /** The emoji's Unicode name, lower case (`dog face`; skin-tone variants add `, dark skin tone`). */
  subject: string;
  /** The set's drawing style: `noto` or `twemoji`. */
  style: string;
  category: string;
  subcategory: string;
  /** Held out of pretraining (see HELD_OUT_SUBJECTS): kept in the file for the forgetting benchmark. */
  heldOut: boolean;
}

/** Records and their images, [N, 64, 64, 3] bytes in record order. */
export interface EmojiDataset {
  records: EmojiRecord[];
  images: Uint8Array;
}

/**
 * The captioning rules, applied afresh each time an image is drawn:
 * - `a <subject>, <style> style`, with `an` before a vowel;
 * - the style part dropped with probability 0.3, so unstyled prompts work too;
 * - the whole caption empty with probability 0.1, as Stable Diffusion was trained, which is what classifier-free
 *   guidance contrasts a prompt with.
 */
export const CAPTION_RULES = { keepStyle: 0.7, empty: 0.1 };

export const article = (subject: string) => (/^[aeiou]/.test(subject) ? 'an' : 'a');

export function captionOf({ subject, style }: Pick<EmojiRecord, 'subject' | 'style'>, withStyle: boolean): string {
  return `${article(subject)} ${subject}${withStyle ? `, ${style} style` : ''}`;
}

export function drawCaption(record: EmojiRecord, rng: Rng): string {
  if (rng.nextUniform() < CAPTION_RULES.empty) return '';
  return captionOf(record, rng.nextUniform() < CAPTION_RULES.keepStyle);
}

/** One gzip file: a JSON header line with the records, then the image bytes. */
export async function writeEmojiDataset(path: string, { records, images }: EmojiDataset): Promise<void> {
  const header = Buffer.from(`${JSON.stringify({ imageSize: IMAGE_SIZE, records })}\n`);
  await writeFile(path, gzipSync(Buffer.concat([header, images]), { level: 9 }));
}

export async function readEmojiDataset(path: string): Promise<EmojiDataset> {
  const bytes = gunzipSync(await readFile(path));
  const newline = bytes.indexOf(10);
  const { imageSize, records } = JSON.parse(bytes.subarray(0, newline).toString()) as { imageSize: number; records: EmojiRecord[] };
  const images = new Uint8Array(bytes.subarray(newline + 1));
  if (imageSize !== IMAGE_SIZE || images.length !== records.length * IMAGE_SIZE * IMAGE_SIZE * 3) {
    throw new Error(`${path}: expected ${records.length} images of ${IMAGE_SIZE} px`);
  }
  return { records, images };
}
