/**
 * The K concepts the benchmark teaches one after another, none seen in pretraining: subjects first (held-out
 * emoji, each drawn in both pretraining styles and varied by small fixed augmentations), then styles (OpenMoji, the
 * held-out drawing style, and four styles made by fixed transforms of held-in noto images). All deterministic.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { type EmojiDataset, IMAGE_SIZE } from '../../scripts/base-model/emoji-records';
import { HELD_OUT_SUBJECTS } from '../../scripts/base-model/dataset';

export interface Concept {
  /** What it is, for tables: `tropical fish`, `openmoji style`. */
  name: string;
  kind: 'subject' | 'style';
  /** The class noun of its prompt `a <token> <category>`: the subject's (HELD_OUT_SUBJECTS), or `style`. */
  category: string;
  /** The images it is trained on, 64 px RGB HWC bytes (PNG-encoded when uploaded). */
  images: Uint8Array[];
}

/** Held-out subjects in teaching order; the first three have three different class nouns. */
export const SUBJECTS = ['tropical fish', 'owl', 'racing car', 'hibiscus', 'face with cowboy hat'];

/** Held-in subjects whose images make the style concepts (noto images transformed; OpenMoji's own drawings). */
export const STYLE_SOURCES: Record<string, string> = {
  'grinning face': '1F600', 'dog face': '1F436', 'red apple': '1F34E', rocket: '1F680', 'slice of pizza': '1F355', 'sun with face': '1F31E',
};

/** Held-in subjects a style is asked for (`a cat face, <token> style`): none is in a style's training images. */
export const STYLE_PROMPT_SUBJECTS = ['cat face', 'birthday cake', 'automobile', 'christmas tree'];

/** Held-in subjects no concept's images or prompts touch: the prior-integrity prompts. */
export const PRIOR_SUBJECTS = ['fire', 'snowman', 'hamburger', 'ghost'];

const PIXELS = IMAGE_SIZE * IMAGE_SIZE;
const isWhite = (bytes: Uint8Array, p: number) => bytes[p * 3] > 235 && bytes[p * 3 + 1] > 235 && bytes[p * 3 + 2] > 235;
const luminance = (bytes: Uint8Array, p: number) => 0.299 * bytes[p * 3] + 0.587 * bytes[p * 3 + 1] + 0.114 * bytes[p * 3 + 2];

/** Four fixed colours by luminance band, white background kept: a palette no emoji set uses. */
const PALETTE = [[38, 70, 83], [42, 157, 143], [233, 196, 106], [244, 162, 97]];

/** The transformed styles: fixed functions of a 64 px RGB image. */
export const STYLE_TRANSFORMS: Record<string, (bytes: Uint8Array) => Uint8Array> = {
  /** Posterized to PALETTE by luminance (four equal bands of 0-255). */
  palette: (bytes) => {
    const out = new Uint8Array(bytes);
    for (let p = 0; p < PIXELS; p++) {
      if (isWhite(bytes, p)) continue;
      out.set(PALETTE[Math.min(3, Math.floor(luminance(bytes, p) / 64))], p * 3);
    }
    return out;
  },
  /** Diagonal hatching: every non-white pixel on two of each six diagonals darkened to 45 %. */
  texture: (bytes) => {
    const out = new Uint8Array(bytes);
    for (let p = 0; p < PIXELS; p++) {
      const [x, y] = [p % IMAGE_SIZE, Math.floor(p / IMAGE_SIZE)];
      if (!isWhite(bytes, p) && (x + y) % 6 < 2) for (let c = 0; c < 3; c++) out[p * 3 + c] = Math.round(bytes[p * 3 + c] * 0.45);
    }
    return out;
  },
  /** Line art: black where the Sobel gradient of luminance exceeds 100 (of up to 1,442), white elsewhere. */
  'line art': (bytes) => {
    const out = new Uint8Array(PIXELS * 3).fill(255);
    const l = (x: number, y: number) => luminance(bytes, Math.min(IMAGE_SIZE - 1, Math.max(0, y)) * IMAGE_SIZE + Math.min(IMAGE_SIZE - 1, Math.max(0, x)));
    for (let y = 0; y < IMAGE_SIZE; y++) {
      for (let x = 0; x < IMAGE_SIZE; x++) {
        const gx = l(x + 1, y - 1) + 2 * l(x + 1, y) + l(x + 1, y + 1) - l(x - 1, y - 1) - 2 * l(x - 1, y) - l(x - 1, y + 1);
        const gy = l(x - 1, y + 1) + 2 * l(x, y + 1) + l(x + 1, y + 1) - l(x - 1, y - 1) - 2 * l(x, y - 1) - l(x + 1, y - 1);
        if (Math.hypot(gx, gy) > 100) out.fill(0, (y * IMAGE_SIZE + x) * 3, (y * IMAGE_SIZE + x) * 3 + 3);
      }
    }
    return out;
  },
  /** Pixel art: the mean colour of each 4x4 block (a 16x16 image), drawn back at 64 px. */
  pixel: (bytes) => {
    const out = new Uint8Array(PIXELS * 3);
    for (let by = 0; by < IMAGE_SIZE; by += 4) {
      for (let bx = 0; bx < IMAGE_SIZE; bx += 4) {
        for (let c = 0; c < 3; c++) {
          let sum = 0;
          for (let y = by; y < by + 4; y++) for (let x = bx; x < bx + 4; x++) sum += bytes[(y * IMAGE_SIZE + x) * 3 + c];
          for (let y = by; y < by + 4; y++) for (let x = bx; x < bx + 4; x++) out[(y * IMAGE_SIZE + x) * 3 + c] = Math.round(sum / 16);
        }
      }
    }
    return out;
  },
};

/** Style concepts in teaching order. */
export const STYLES = ['openmoji', 'palette', 'texture', 'line art', 'pixel'];

export const rawOf = (png: Uint8Array | Buffer) =>
  sharp(png).flatten({ background: '#ffffff' }).resize(IMAGE_SIZE, IMAGE_SIZE, { fit: 'contain', background: '#ffffff' }).removeAlpha().raw().toBuffer()
    .then((b) => new Uint8Array(b));

export const pngOf = (bytes: Uint8Array) => sharp(bytes, { raw: { width: IMAGE_SIZE, height: IMAGE_SIZE, channels: 3 } }).png().toBuffer();

/** The subjects' augmentations, each of every original image: as is, rotated by +-10 degrees, and shrunk to 81 % (52 px) on white. */
async function augmentations(bytes: Uint8Array, index: number): Promise<Uint8Array[]> {
  const png = await pngOf(bytes);
  const rotated = await sharp(png).rotate(index % 2 ? -10 : 10, { background: '#ffffff' }).png().toBuffer();
  const { width, height } = await sharp(rotated).metadata();
  const centred = await sharp(rotated)
    .extract({ left: Math.floor((width! - IMAGE_SIZE) / 2), top: Math.floor((height! - IMAGE_SIZE) / 2), width: IMAGE_SIZE, height: IMAGE_SIZE })
    .png().toBuffer();
  const margin = Math.round(IMAGE_SIZE * 0.1);
  const small = IMAGE_SIZE - 2 * margin;
  const shrunk = await sharp(png).resize(small, small).extend({ top: margin, bottom: margin, left: margin, right: margin, background: '#ffffff' }).png().toBuffer();
  return [bytes, await rawOf(centred), await rawOf(shrunk)];
}

const recordImage = (data: EmojiDataset, index: number) => data.images.slice(index * PIXELS * 3, (index + 1) * PIXELS * 3);

/** Indices of `subject`'s images (skin-tone variants excluded), noto first. */
export function imagesOf(data: EmojiDataset, subject: string): number[] {
  return data.records.flatMap((r, i) => (r.subject === subject ? [i] : [])).sort((a, b) => data.records[a].style.localeCompare(data.records[b].style));
}

/** OpenMoji's colour SVG of an emoji, rendered at 64 px on white; undefined where the package lacks it. */
async function openMoji(hexcode: string): Promise<Uint8Array | undefined> {
  const root = dirname(createRequire(import.meta.url).resolve('openmoji/package.json'));
  const svg = await readFile(join(root, 'color', 'svg', `${hexcode}.svg`)).catch(() => undefined);
  return svg && rawOf(await sharp(svg, { density: 144 }).png().toBuffer());
}

/** A held-out subject's training images: each of its drawings with its augmentations (HWC bytes, 64 px). */
export async function subjectImages(data: EmojiDataset, subject: string): Promise<Uint8Array[]> {
  const originals = imagesOf(data, subject);
  if (originals.length === 0) throw new Error(`the dataset has no image of the held-out subject "${subject}"`);
  return (await Promise.all(originals.map((index, i) => augmentations(recordImage(data, index), i)))).flat();
}

/** The first `k` concepts: ceil(k/2) subjects, then floor(k/2) styles (K = 10: all five of each). */
export async function buildConcepts(data: EmojiDataset, k: number): Promise<Concept[]> {
  const subjects = Math.min(SUBJECTS.length, Math.ceil(k / 2));
  const styles = Math.min(STYLES.length, k - subjects);
  if (subjects + styles < k) throw new Error(`at most ${SUBJECTS.length + STYLES.length} concepts, asked for ${k}`);
  const concepts: Concept[] = [];
  for (const subject of SUBJECTS.slice(0, subjects)) {
    concepts.push({ name: subject, kind: 'subject', category: HELD_OUT_SUBJECTS[subject], images: await subjectImages(data, subject) });
  }
  const sources = Object.keys(STYLE_SOURCES).map((subject) => imagesOf(data, subject).find((i) => data.records[i].style === 'noto'));
  if (sources.some((i) => i === undefined)) throw new Error(`the dataset lacks a noto image of a style source (${Object.keys(STYLE_SOURCES).join(', ')})`);
  for (const style of STYLES.slice(0, styles)) {
    const images = style === 'openmoji'
      ? (await Promise.all(Object.values(STYLE_SOURCES).map(openMoji))).filter((image): image is Uint8Array => image !== undefined)
      : sources.map((index) => STYLE_TRANSFORMS[style](recordImage(data, index!)));
    concepts.push({ name: `${style} style`, kind: 'style', category: 'style', images });
  }
  return concepts;
}
