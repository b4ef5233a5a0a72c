import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { type EmojiDataset, type EmojiRecord, IMAGE_SIZE } from './emoji-records';

/**
 * The base model's training images: the 64 px PNGs of two emoji sets on the npm registry, each emoji
 * flattened onto white. Which sets, and why these two:
 * - `emoji-datasource-google`: Google's Noto Emoji, Apache 2.0 ("noto style");
 * - `emoji-datasource-twitter`: Twemoji graphics, CC-BY 4.0 ("twemoji style").
 * The same packages ship Apple's and Facebook's sets, which may not be redistributed: never read.
 * OpenMoji (CC BY-SA 4.0, `openmoji`) is the held-out style: it never enters pretraining, so the shipped
 * weights carry no share-alike terms, and the forgetting benchmark has a style the model has not seen.
 */
export const STYLES = [
  { style: 'noto', pkg: 'emoji-datasource-google', folder: 'img/google/64', has: 'has_img_google' },
  { style: 'twemoji', pkg: 'emoji-datasource-twitter', folder: 'img/twitter/64', has: 'has_img_twitter' },
] as const;

/**
 * Subjects held out of pretraining, in every style, with the class noun a DreamBooth prompt pairs them
 * with (`a sks fish`): each noun names other emoji that stay in, so the class prior is known to the model.
 */
export const HELD_OUT_SUBJECTS: Record<string, string> = {
  'tropical fish': 'fish',
  'racing car': 'car',
  hibiscus: 'flower',
  baseball: 'ball',
  'face with cowboy hat': 'face',
  'palm tree': 'tree',
  owl: 'bird',
  'alarm clock': 'clock',
  'house with garden': 'house',
  'tiger face': 'face',
};

/** Skin-tone modifiers by code point, as the Unicode names say them. */
const SKIN_TONES: Record<string, string> = {
  '1F3FB': 'light skin tone',
  '1F3FC': 'medium-light skin tone',
  '1F3FD': 'medium skin tone',
  '1F3FE': 'medium-dark skin tone',
  '1F3FF': 'dark skin tone',
};

interface RawEmoji {
  name: string;
  image: string;
  category: string;
  subcategory: string;
  has_img_google: boolean;
  has_img_twitter: boolean;
  skin_variations?: Record<string, { image: string; has_img_google: boolean; has_img_twitter: boolean }>;
}

/** Unicode names are upper case and terse ("CLOCK FACE ONE OCLOCK"): lower case, single spaces. */
export const subjectOf = (unicodeName: string) => unicodeName.toLowerCase().replace(/\s+/g, ' ').trim();

/**
 * Every (emoji, style) image of the sets above: base emoji and their single-skin-tone variants, without
 * the `Component` category (bare skin-tone swatches and hair parts). Images are [N, 64, 64, 3] bytes.
 * `limit` stops after that many images (a smoke run's dataset: the first emoji of the first set).
 */
export async function buildEmojiDataset({ limit = Infinity }: { limit?: number } = {}): Promise<EmojiDataset> {
  const require = createRequire(import.meta.url);
  const records: EmojiRecord[] = [];
  const pixels: Buffer[] = [];
  for (const { style, pkg, folder, has } of STYLES) {
    const root = dirname(require.resolve(`${pkg}/package.json`));
    const emoji = require(`${pkg}/emoji.json`) as RawEmoji[];
    for (const e of emoji) {
      if (e.category === 'Component') continue;
      const subject = subjectOf(e.name);
      const variants = [{ subject, image: e.image, present: e[has] }];
      for (const [tone, variant] of Object.entries(e.skin_variations ?? {})) {
        if (SKIN_TONES[tone]) variants.push({ subject: `${subject}, ${SKIN_TONES[tone]}`, image: variant.image, present: variant[has] });
      }
      for (const v of variants.filter((variant) => variant.present)) {
        if (records.length >= limit) return { records, images: new Uint8Array(Buffer.concat(pixels)) };
        pixels.push(await sharp(join(root, folder, v.image))
          .flatten({ background: '#ffffff' })
          .resize(IMAGE_SIZE, IMAGE_SIZE, { fit: 'contain', background: '#ffffff' })
          .removeAlpha()
          .raw()
          .toBuffer());
        records.push({
          subject: v.subject, style, category: e.category, subcategory: e.subcategory,
          heldOut: subjectOf(e.name) in HELD_OUT_SUBJECTS,
        });
      }
    }
  }
  return { records, images: new Uint8Array(Buffer.concat(pixels)) };
}
