/**
 * The benchmark's measuring instrument: a small CNN trained here, with the engine's own training, to tell the
 * dataset's 98 subcategories (`animal-bird`, `food-fruit`, ...) apart. Its pooled features are the identity
 * embedding; the Gram matrices of its first two convolutions' outputs (Gatys et al.'s style statistics, which discard where things
 * are) are the style descriptor.
 *
 * Trained on held-in subjects only (no benchmark concept is ever seen), with 15 % of those subjects (both styles)
 * held out: held-out accuracy = top-1 subcategory of images of subjects the net has never seen, which is what it
 * faces in the benchmark. The style descriptor is checked on its own: nearest-centroid accuracy over noto, twemoji
 * and the benchmark's four transformed styles, centroids from training images, tested on held-out ones.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { compileTrainStep, Trainer } from '../../src/engine/autodiff';
import {
  conv, div, Graph, groupNorm, linear, log as ln, matmul, mul, reduceMean, reduceSum, reshape, serialize, softmax, add, type Tensor, transpose,
} from '../../src/engine/graph';
import { Rng } from '../../src/engine/random';
import type { EngineWorker } from '../../src/engine';
import { type EmojiDataset, IMAGE_SIZE } from '../../scripts/base-model/emoji-records';
import { STYLE_TRANSFORMS } from './concepts';

/** Channels of the four stride-2 convolutions: 64 px in, 4x4x128 before pooling. */
const CHANNELS = [32, 64, 128, 128];
const GROUPS = 8;
const BATCH = 64;

export interface EncoderOptions {
  steps: number;
  learningRate: number;
  seed: number;
}

export interface TrainedEncoder {
  weights: Record<string, Float32Array>;
  classes: number;
  /** Top-1 subcategory accuracy on the images of held-out subjects, and how many there were. */
  heldOutAccuracy: number;
  heldOutImages: number;
  trainImages: number;
  /** Nearest-centroid accuracy of the style descriptor over noto, twemoji and the four transformed styles (held-out images). */
  styleAccuracy: number;
  seconds: number;
}

/** One image's features: `identity` and `style` are centred on the training set's mean and unit length. */
export interface Features {
  identity: Float32Array;
  style: Float32Array;
}

/** Skin-tone variants are the same subject: held out together. */
const baseSubject = (subject: string) => subject.replace(/, [a-z-]+ skin tone$/, '');

/** CHW floats in [-1, 1] of HWC bytes, with an optional shift (white fill) and mirror: the training augmentation. */
function chw(pixels: Uint8Array, out: Float32Array, offset: number, dx = 0, dy = 0, mirror = false): void {
  const s = IMAGE_SIZE;
  for (let y = 0; y < s; y++) {
    for (let x = 0; x < s; x++) {
      const sx = (mirror ? s - 1 - x : x) - dx;
      const sy = y - dy;
      const inside = sx >= 0 && sx < s && sy >= 0 && sy < s;
      for (let c = 0; c < 3; c++) out[offset + (c * s + y) * s + x] = inside ? pixels[(sy * s + sx) * 3 + c] / 127.5 - 1 : 1;
    }
  }
}

/** The net: conv stack, pooled embedding, logits, and the first two layers' Gram matrices. */
function buildNet(g: Graph, batch: number, classes: number, weights: (name: string, shape: number[]) => Tensor) {
  const images = g.input('images', 'float32', [batch, 3, IMAGE_SIZE, IMAGE_SIZE]);
  let h = images;
  let cin = 3;
  const grams: Tensor[] = [];
  for (const [i, cout] of CHANNELS.entries()) {
    h = conv(h, weights(`conv${i}.weight`, [cout, cin, 3, 3]), weights(`conv${i}.bias`, [cout]), { strides: [2, 2], pads: [1, 1, 1, 1] });
    if (i < 2) {
      // Before the norm, which would divide out each image's own contrast and colour: part of its style.
      const pixels = h.shape[2] * h.shape[3];
      const flat = reshape(h, [batch, cout, pixels]);
      grams.push(div(matmul(flat, transpose(flat, [0, 2, 1])), pixels));
    }
    h = groupNorm(h, GROUPS, weights(`norm${i}.weight`, [cout]), weights(`norm${i}.bias`, [cout]), 1e-5, { silu: true });
    cin = cout;
  }
  const embedding = reduceMean(h, [2, 3], false);
  const logits = linear(embedding, weights('head.weight', [classes, cin]), weights('head.bias', [classes]));
  return { images, embedding, logits, grams };
}

/** He-normal convolution and head weights, unit norms, zero biases. */
function initialWeights(classes: number, rng: Rng): Record<string, Float32Array> {
  const weights: Record<string, Float32Array> = {};
  let cin = 3;
  const he = (count: number, fanIn: number) => rng.normalFloat32(count).map((x) => x * Math.sqrt(2 / fanIn));
  for (const [i, cout] of CHANNELS.entries()) {
    weights[`conv${i}.weight`] = he(cout * cin * 9, cin * 9);
    weights[`conv${i}.bias`] = new Float32Array(cout);
    weights[`norm${i}.weight`] = new Float32Array(cout).fill(1);
    weights[`norm${i}.bias`] = new Float32Array(cout);
    cin = cout;
  }
  weights['head.weight'] = he(classes * cin, cin).map((x) => x / Math.SQRT2);
  weights['head.bias'] = new Float32Array(classes);
  return weights;
}

interface Split {
  labels: Map<string, number>;
  train: number[];
  heldOut: number[];
}

/** Classes are the held-in records' subcategories; 15 % of held-in subjects (all their images) are held out. */
function splitDataset(data: EmojiDataset, seed: number): Split {
  const rng = new Rng(seed);
  const heldInRecords = data.records.filter((r) => !r.heldOut);
  const labels = new Map([...new Set(heldInRecords.map((r) => r.subcategory))].sort().map((name, i) => [name, i]));
  const heldOutSubjects = new Set([...new Set(heldInRecords.map((r) => baseSubject(r.subject)))].filter(() => rng.nextUniform() < 0.15));
  const train: number[] = [];
  const heldOut: number[] = [];
  data.records.forEach((record, i) => {
    if (!record.heldOut) (heldOutSubjects.has(baseSubject(record.subject)) ? heldOut : train).push(i);
  });
  return { labels, train, heldOut };
}

const imageAt = (data: EmojiDataset, index: number) => data.images.subarray(index * IMAGE_SIZE * IMAGE_SIZE * 3, (index + 1) * IMAGE_SIZE * IMAGE_SIZE * 3);

/**
 * Trains the classifier: AdamW, batch 64 with random shifts of up to 4 px and mirroring, cross-entropy over the
 * subcategories, learning rate constant then linearly down to zero over the last half.
 */
export async function trainEncoder(worker: EngineWorker, data: EmojiDataset, options: EncoderOptions, log: (line: string) => void): Promise<TrainedEncoder> {
  const started = performance.now();
  const split = splitDataset(data, options.seed);
  const classes = split.labels.size;
  const rng = new Rng(options.seed);
  const g = new Graph('encoder_train');
  const initial = initialWeights(classes, rng);
  const net = buildNet(g, BATCH, classes, (name, shape) => g.weight(name, shape, initial[name]));
  const target = g.input('target', 'float32', [BATCH, classes]);
  // Cross-entropy; the floor keeps log finite where softmax underflows.
  const loss = mul(reduceMean(reduceSum(mul(target, ln(add(softmax(net.logits, -1), 1e-9))), [1], false), [0], false), -1);
  const trainer = await Trainer.create(worker, compileTrainStep({ graph: g, loss, trainable: Object.keys(initial), optimizer: { maxGradNorm: 1 } }), initial);
  try {
    const images = new Float32Array(BATCH * 3 * IMAGE_SIZE * IMAGE_SIZE);
    const onehot = new Float32Array(BATCH * classes);
    let order: number[] = [];
    let recent = 0;
    for (let step = 0; step < options.steps; step++) {
      onehot.fill(0);
      for (let row = 0; row < BATCH; row++) {
        if (order.length === 0) order = shuffled(split.train, rng);
        const index = order.pop()!;
        const shift = () => Math.floor(rng.nextUniform() * 9) - 4;
        chw(imageAt(data, index), images, row * 3 * IMAGE_SIZE * IMAGE_SIZE, shift(), shift(), rng.nextUniform() < 0.5);
        onehot[row * classes + split.labels.get(data.records[index].subcategory)!] = 1;
      }
      const lr = options.learningRate * Math.min(1, 2 * (1 - step / options.steps));
      const { loss: value } = await trainer.step({
        images: { dtype: 'float32', dims: [BATCH, 3, IMAGE_SIZE, IMAGE_SIZE], data: images },
        target: { dtype: 'float32', dims: [BATCH, classes], data: onehot },
      }, lr);
      recent += value;
      if ((step + 1) % 100 === 0 || step + 1 === options.steps) {
        log(`encoder step ${step + 1}/${options.steps}: loss ${(recent / ((step % 100) + 1)).toFixed(3)}`);
        recent = 0;
      }
    }
    const weights = Object.fromEntries(Object.keys(initial).map((name) => [name, trainer.param(name) as Float32Array]));
    const encoder = await Encoder.open(worker, { weights, classes, center: undefined });
    try {
      const { logits } = await encoder.run(split.heldOut.map((i) => imageAt(data, i)));
      let correct = 0;
      split.heldOut.forEach((index, row) => {
        const scores = logits.subarray(row * classes, (row + 1) * classes);
        const best = scores.indexOf(Math.max(...scores));
        if (best === split.labels.get(data.records[index].subcategory)) correct++;
      });
      const styleAccuracy = await encoder.styleCheck(data, split);
      return {
        weights, classes, heldOutAccuracy: correct / split.heldOut.length, heldOutImages: split.heldOut.length, trainImages: split.train.length,
        styleAccuracy, seconds: (performance.now() - started) / 1000,
      };
    } finally {
      await encoder.close();
    }
  } finally {
    await trainer.dispose();
  }
}

function shuffled<T>(items: readonly T[], rng: Rng): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng.nextUniform() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

interface RawFeatures {
  identity: Float32Array[];
  style: Float32Array[];
}

/** Upper triangles (diagonal included) of [channels x channels] Gram matrices, concatenated, signed square root. */
function styleVector(grams: Float32Array[], row: number, channels: number[]): Float32Array {
  const out: number[] = [];
  grams.forEach((gram, layer) => {
    const c = channels[layer];
    const base = row * c * c;
    for (let i = 0; i < c; i++) for (let j = i; j < c; j++) out.push(Math.sign(gram[base + i * c + j]) * Math.sqrt(Math.abs(gram[base + i * c + j])));
  });
  return Float32Array.from(out);
}

const EVAL_BATCH = 32;

/** The trained net for inference: features of 64 px HWC byte images. */
export class Encoder {
  private constructor(
    private readonly worker: EngineWorker,
    private readonly session: Awaited<ReturnType<EngineWorker['createSession']>>,
    readonly classes: number,
    /** Mean identity and style vectors of the training images, subtracted before normalizing. */
    private center: { identity: Float32Array; style: Float32Array } | undefined,
  ) {}

  static async open(worker: EngineWorker, { weights, classes, center }: { weights: Record<string, Float32Array>; classes: number; center?: { identity: Float32Array; style: Float32Array } }): Promise<Encoder> {
    const g = new Graph('encoder');
    const net = buildNet(g, EVAL_BATCH, classes, (name, shape) => g.weight(name, shape, weights[name]));
    g.output(net.embedding, 'embedding');
    g.output(net.logits, 'logits');
    net.grams.forEach((gram, i) => g.output(gram, `gram${i}`));
    return new Encoder(worker, await worker.createSession(serialize(g)), classes, center);
  }

  /** Raw (uncentred) features and logits of images, in batches of 32. */
  async run(images: readonly Uint8Array[]): Promise<{ logits: Float32Array; raw: RawFeatures }> {
    const logits = new Float32Array(images.length * this.classes);
    const raw: RawFeatures = { identity: [], style: [] };
    const size = 3 * IMAGE_SIZE * IMAGE_SIZE;
    for (let start = 0; start < images.length; start += EVAL_BATCH) {
      const batch = images.slice(start, start + EVAL_BATCH);
      const pixels = new Float32Array(EVAL_BATCH * size).fill(1);
      batch.forEach((image, row) => chw(image, pixels, row * size));
      const out = await this.worker.run(this.session, { images: { dtype: 'float32', dims: [EVAL_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE], data: pixels } });
      const embedding = out.embedding.data as Float32Array;
      const grams = [out.gram0.data as Float32Array, out.gram1.data as Float32Array];
      const width = embedding.length / EVAL_BATCH;
      batch.forEach((_, row) => {
        raw.identity.push(embedding.slice(row * width, (row + 1) * width));
        raw.style.push(styleVector(grams, row, CHANNELS.slice(0, 2)));
      });
      logits.set((out.logits.data as Float32Array).subarray(0, batch.length * this.classes), start * this.classes);
    }
    return { logits, raw };
  }

  /** Sets the centre from reference images (the training images), so that 0 means "as alike as two average emoji". */
  async centerOn(images: readonly Uint8Array[]): Promise<{ identity: Float32Array; style: Float32Array }> {
    const { raw } = await this.run(images);
    this.center = { identity: mean(raw.identity), style: mean(raw.style) };
    return this.center;
  }

  /** Centred, unit-length features of each image. */
  async features(images: readonly Uint8Array[]): Promise<Features[]> {
    if (!this.center) throw new Error('Encoder.features needs a centre: call centerOn first');
    const { raw } = await this.run(images);
    return raw.identity.map((identity, i) => ({
      identity: unit(identity.map((x, j) => x - this.center!.identity[j])),
      style: unit(raw.style[i].map((x, j) => x - this.center!.style[j])),
    }));
  }

  /**
   * Nearest-centroid accuracy of the style descriptor over six styles: noto, twemoji and STYLE_TRANSFORMS of noto
   * images. Centroids from up to 64 training images a style, tested on up to 64 held-out images a style.
   */
  async styleCheck(data: EmojiDataset, split: Split): Promise<number> {
    const take = (indices: number[], style: string) => indices.filter((i) => data.records[i].style === style).filter((_, i) => i % 7 === 0).slice(0, 64);
    const styled = (indices: number[]) => [
      ...['noto', 'twemoji'].map((style) => ({ style, images: take(indices, style).map((i) => imageAt(data, i)) })),
      ...Object.entries(STYLE_TRANSFORMS).map(([style, transform]) => ({ style, images: take(indices, 'noto').map((i) => transform(imageAt(data, i))) })),
    ];
    const train = styled(split.train);
    await this.centerOn(train.flatMap((s) => s.images));
    const centroids = await Promise.all(train.map(async ({ style, images }) => ({ style, centroid: mean((await this.features(images)).map((f) => f.style)) })));
    let correct = 0;
    let total = 0;
    for (const { style, images } of styled(split.heldOut)) {
      for (const f of await this.features(images)) {
        const nearest = centroids.reduce((best, c) => (cosine(f.style, c.centroid) > cosine(f.style, best.centroid) ? c : best));
        if (nearest.style === style) correct++;
        total++;
      }
    }
    return total ? correct / total : NaN;
  }

  async close(): Promise<void> {
    await this.worker.release(this.session);
  }
}

export function mean(vectors: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(vectors[0].length);
  for (const v of vectors) for (let i = 0; i < v.length; i++) out[i] += v[i] / vectors.length;
  return out;
}

function unit(v: Float32Array): Float32Array {
  const norm = Math.hypot(...v) || 1;
  return v.map((x) => x / norm);
}

export function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / (Math.sqrt(na * nb) || 1);
}

/** The trained weights and numbers in one JSON file (a few MB): trained once per work folder, then reused. */
export async function saveEncoder(path: string, encoder: TrainedEncoder): Promise<void> {
  const weights = Object.fromEntries(Object.entries(encoder.weights).map(([name, data]) => [name, Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64')]));
  await writeFile(path, JSON.stringify({ ...encoder, weights }));
}

export async function loadEncoder(path: string): Promise<TrainedEncoder> {
  const saved = JSON.parse(await readFile(path, 'utf8')) as Omit<TrainedEncoder, 'weights'> & { weights: Record<string, string> };
  const weights = Object.fromEntries(Object.entries(saved.weights).map(([name, b64]) => {
    const bytes = Buffer.from(b64, 'base64');
    return [name, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength))];
  }));
  return { ...saved, weights };
}
