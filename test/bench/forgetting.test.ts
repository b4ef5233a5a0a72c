import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runForgetting, type ForgettingOptions } from '../../bench/forgetting/benchmark';
import { PRIOR_SUBJECTS, STYLE_PROMPT_SUBJECTS, STYLE_SOURCES, SUBJECTS } from '../../bench/forgetting/concepts';
import { BenchPlatform } from '../../bench/forgetting/platform';
import { meanRetention, stageTable } from '../../bench/forgetting/report';
import { type EmojiRecord, IMAGE_SIZE, writeEmojiDataset } from '../../scripts/base-model/emoji-records';
import { FolderPackSource, loadStableDiffusionFrom, parseUNetWeights } from '../../src/engine';
import { BUNDLED_TINY_SD, createRandomPack, writePackToFolder } from '../../src/engine/packs';
import { FineTuneMethod, Model, ModelKind, ModelVersion } from '../../src/entities';
import { tempDir } from '../platform/helpers';

/** A disc on white whose colour and size depend on the record: enough for every part of the run to have images. */
function disc(seed: number): Uint8Array {
  const bytes = new Uint8Array(IMAGE_SIZE * IMAGE_SIZE * 3).fill(255);
  const radius = 12 + (seed % 17);
  const colour = [(seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256];
  for (let y = 0; y < IMAGE_SIZE; y++) {
    for (let x = 0; x < IMAGE_SIZE; x++) {
      if ((x - 32) ** 2 + (y - 32) ** 2 < radius ** 2) bytes.set(colour, (y * IMAGE_SIZE + x) * 3);
    }
  }
  return bytes;
}

/** The subjects the benchmark reads (two held out, as K = 3 needs), plus fillers so the encoder has classes to tell apart. */
function tinyDataset() {
  const subjects = [
    ...SUBJECTS.slice(0, 2).map((subject) => ({ subject, heldOut: true })),
    ...[...Object.keys(STYLE_SOURCES), ...STYLE_PROMPT_SUBJECTS, ...PRIOR_SUBJECTS, 'filler one', 'filler two'].map((subject) => ({ subject, heldOut: false })),
  ];
  const records: EmojiRecord[] = [];
  const images: Uint8Array[] = [];
  subjects.forEach(({ subject, heldOut }, i) => {
    for (const style of ['noto', 'twemoji']) {
      records.push({ subject, style, category: 'Test', subcategory: `group-${i % 4}`, heldOut });
      images.push(disc(i * 2 + (style === 'noto' ? 0 : 1)));
    }
  });
  return { records, images: Uint8Array.from(images.flatMap((image) => [...image])) };
}

/**
 * A run's folder with a random tiny pack and the tiny dataset, made before the describe's tests and removed after;
 * `ready` gets the options of a `k`-stage run of `method` with a few steps of everything.
 */
function tinyRun(method: ForgettingOptions['method'], k: number, ready: (options: ForgettingOptions) => void) {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    dir = await tempDir(`bd-forgetting-${method}-`);
    await writePackToFolder(createRandomPack(BUNDLED_TINY_SD, 0), join(dir.dir, 'pack'));
    await writeEmojiDataset(join(dir.dir, 'emoji.gz'), tinyDataset());
    ready({
      pack: join(dir.dir, 'pack'), data: join(dir.dir, 'emoji.gz'), work: join(dir.dir, 'work'), out: join(dir.dir, 'out'),
      method, k, steps: 2, learningRate: 1e-3, rank: 2, batchSize: 1, seed: 1, images: 2, sampleSteps: 2, guidance: 5, encoderSteps: 3,
      log: () => {},
    });
  });
  afterAll(async () => {
    await dir?.remove();
  });
}

describe('forgetting benchmark (tiny random pack, K = 3)', () => {
  let options: ForgettingOptions;
  tinyRun('lora', 3, (made) => (options = made));

  it('teaches two subjects and a style to every arm, with a finite score for each concept an arm knows after each stage', async () => {
    const results = await runForgetting(options);
    expect(results.concepts.map((c) => [c.name, c.kind])).toEqual([[SUBJECTS[0], 'subject'], [SUBJECTS[1], 'subject'], ['openmoji style', 'style']]);
    expect(new Set(results.concepts.map((c) => c.token)).size).toBe(3);
    expect(results.stages.map((s) => s.k)).toEqual([1, 2, 3]);
    for (const stage of results.stages) {
      const known = results.concepts.slice(0, stage.k).map((c) => c.name);
      for (const arm of ['naive', 'big'] as const) {
        expect(Object.keys(stage.scores[arm]).sort()).toEqual([...known].sort());
        for (const score of Object.values(stage.scores[arm])) expect(Number.isFinite(score)).toBe(true);
      }
      expect(Object.keys(stage.scores.alone)).toEqual([stage.concept]);
      for (const arm of ['naive', 'big', 'alone'] as const) {
        expect(Number.isFinite(stage.prior[arm])).toBe(true);
        expect(stage.trainSeconds[arm]).toBeGreaterThan(0);
      }
    }
    // The style of stage 3 is composed with the first subject.
    const pair = `${SUBJECTS[0]} + openmoji style`;
    expect(Object.keys(results.stages[2].composition.big!)).toEqual([pair]);
    expect(Number.isFinite(results.stages[2].composition.naive![pair])).toBe(true);
    expect(results.encoder.heldOutAccuracy).toBeGreaterThanOrEqual(0);

    const table = stageTable(results, 3);
    expect(table).toContain('| concept | score | base | alone | naive (retention) | big (retention) |');
    expect(table.split('\n').filter((line) => line.startsWith(`| ${SUBJECTS[0]}`))).toHaveLength(1);
    expect(table).toMatch(/\| \*\*mean retention\*\* \(concepts 1-2\) \| \| \| \| (n\/a|-?\d+\.\d\d) \| (n\/a|-?\d+\.\d\d) \|/);
    for (const file of ['results.json', 'table.md', 'concepts.png', 'stage-1.png', 'stage-3.png']) expect(existsSync(join(options.out, file)), file).toBe(true);
    expect(JSON.parse(await readFile(join(options.out, 'results.json'), 'utf8')).stages).toHaveLength(3);
    if (meanRetention(results, 'big', 3) !== undefined) expect(existsSync(join(options.out, 'retention.png'))).toBe(true);
  }, 600_000);

  it('resumes a finished work folder without training again, and refuses one made with other options or other weights', async () => {
    const again = await runForgetting(options);
    expect(again.stages.map((s) => s.trainSeconds)).toEqual(JSON.parse(await readFile(join(options.out, 'results.json'), 'utf8')).stages.map((s: { trainSeconds: unknown }) => s.trainSeconds));
    await expect(runForgetting({ ...options, steps: 3 })).rejects.toThrow(/other options/);
    // The same pack folder with retrained weights (another seed's) is another base model.
    await writePackToFolder(createRandomPack(BUNDLED_TINY_SD, 1), options.pack);
    await expect(runForgetting(options)).rejects.toThrow(/other options/);
  }, 300_000);
});

/** Root mean square of the difference of two UNets over all their tensors. */
function rmsDistance(a: ReadonlyMap<string, Float32Array>, b: ReadonlyMap<string, Float32Array>): number {
  let sum = 0;
  let count = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!;
    for (let i = 0; i < x.length; i++) sum += (x[i] - y[i]) ** 2;
    count += x.length;
  }
  return Math.sqrt(sum / count);
}

describe('forgetting benchmark with full fine-tuning (tiny random pack, K = 2)', () => {
  let options: ForgettingOptions;
  tinyRun('full', 2, (made) => (options = made));

  it('trains whole UNets in every arm: the platform stores FULL versions, naive is the same training and continues its own UNet', async () => {
    const results = await runForgetting(options);
    expect(results.stages.map((s) => s.k)).toEqual([1, 2]);
    expect(results.options).toMatchObject({ method: 'full' });
    expect(results.options).not.toHaveProperty('rank');
    // Stage 1 is one request from the base model in every arm.
    const fish = results.stages[0].scores;
    expect(fish.naive[SUBJECTS[0]]).toBeCloseTo(fish.alone[SUBJECTS[0]], 3);
    expect(fish.big[SUBJECTS[0]]).toBeCloseTo(fish.alone[SUBJECTS[0]], 3);

    const models = await loadStableDiffusionFrom(new FolderPackSource(options.pack));
    const base = models.unet.weights;
    const naive = async (k: number) => parseUNetWeights(models, new Uint8Array(await readFile(join(options.work, `naive-${k}.safetensors`))));
    const platform = await BenchPlatform.start(join(options.work, 'platform'));
    try {
      const { db } = platform.services;
      const { metamodelId } = JSON.parse(await readFile(join(options.work, 'state.json'), 'utf8')) as { metamodelId: string };
      const alone = await db.getRepository(Model).find({ where: { kind: ModelKind.PRIVATE }, order: { createdAt: 'ASC' } });
      expect(alone).toHaveLength(2);
      const heads = [...alone.map((m) => m.id), metamodelId];
      for (const id of heads) {
        const { headVersionId } = await db.getRepository(Model).findOneByOrFail({ id });
        expect((await db.getRepository(ModelVersion).findOneByOrFail({ id: headVersionId! })).method).toBe(FineTuneMethod.FULL);
      }
      const [alone1, big] = await Promise.all([platform.headWeights(alone[0].id, models), platform.headWeights(metamodelId, models)]);
      if (!('unet' in alone1) || !('unet' in big)) throw new Error('expected full UNets at the heads');
      expect(new Set(big.unet.keys())).toEqual(new Set(base.keys()));
      // The in-process naive stage 1 is the platform's training: the same UNet, up to float noise, far from the base's.
      const [naive1, naive2] = [await naive(1), await naive(2)];
      const trained = rmsDistance(alone1.unet, base);
      expect(trained).toBeGreaterThan(0);
      expect(rmsDistance(naive1, alone1.unet)).toBeLessThan(trained / 100);
      // Stage 2 continues from stage 1's UNet: it ends nearer to it than to the base.
      expect(rmsDistance(naive2, naive1)).toBeLessThan(rmsDistance(naive2, base));
    } finally {
      await platform.stop();
    }
  }, 300_000);
});
