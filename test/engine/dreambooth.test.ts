import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Graph } from '../../src/engine/graph';
import { parseUNetLora } from '../../src/engine/models/lora';
import { buildUNet } from '../../src/engine/models/unet';
import {
  type DreamBoothCheckpoint, DreamBoothError, type DreamBoothProgress, type DreamBoothRequest, DreamBoothTrainer, type Example, type LatentBatch, type TrainingStart,
  trainDreamBooth,
} from '../../src/engine/pipelines/dreambooth';
import { parseDreamBoothCheckpoint, serializeDreamBoothCheckpoint } from '../../src/engine/pipelines/dreambooth-checkpoint';
import { cropOrigin, ImageInputError, loadTrainingPicture, trainingPixels } from '../../src/engine/pipelines/images';
import { serializeLora } from '../../src/engine/pipelines/lora-file';
import { attachWeights, loadStableDiffusionFrom, type StableDiffusionModels } from '../../src/engine/pipelines/stable-diffusion';
import { TrainingBatches } from '../../src/engine/pipelines/training-batches';
import { TrainingEncoders } from '../../src/engine/pipelines/training-encoders';
import { generateClassImages } from '../../src/engine/pipelines/class-images';
import { Txt2ImgPipeline } from '../../src/engine/pipelines/txt2img';
import { Rng } from '../../src/engine/random';
import { EngineWorker } from '../../src/engine/runtime';
import { createScheduler } from '../../src/engine/schedulers';
import { FolderPackSource } from '../../src/engine/weights/pack';
import { parseSafetensors, readSafetensors, type StoredTensor, toFloat32, toIntegers } from '../../src/engine/weights/safetensors';
import { hasFixtures, loadReference, relativeL2, TINY_SD15 } from '../helpers/fixtures';
import { runGraph } from '../helpers/models';

/** The training view of `bytes` at `size`: center crop, not flipped. */
const centerPixels = async (bytes: Uint8Array, size: number) => trainingPixels(await loadTrainingPicture(bytes, size), size, { crop: 'center', flip: false });

describe('training images', () => {
  it('resizes the shorter side, center-crops and scales to [-1, 1] NCHW', async () => {
    // 60x40: left third blue, the rest red. Shrunk to 30x20, then the center 20x20: red, with blue at the left edge.
    const width = 60;
    const height = 40;
    const raw = Buffer.alloc(width * height * 3);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) raw.set(x < 12 ? [0, 0, 255] : [255, 0, 0], (y * width + x) * 3);
    }
    const png = await sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer();
    const picture = await loadTrainingPicture(png, 20);
    expect([picture.width, picture.height, picture.data.length]).toEqual([30, 20, 30 * 20 * 3]);
    const { data, size } = trainingPixels(picture, 20, { crop: 'center', flip: false });
    expect(size).toBe(20);
    expect(data.length).toBe(3 * 20 * 20);
    const at = (c: number, y: number, x: number) => data[c * 400 + y * 20 + x];
    expect(at(0, 10, 10)).toBeCloseTo(1, 5);
    expect(at(2, 10, 10)).toBeCloseTo(-1, 5);
    // 12 of 60 columns are blue (6 of 30 after the resize); the crop drops 5 from each side, leaving one.
    expect(at(2, 10, 0)).toBeGreaterThan(0);
    expect(at(2, 10, 3)).toBeCloseTo(-1, 1);
    expect(Math.min(...data)).toBeGreaterThanOrEqual(-1);
    expect(Math.max(...data)).toBeLessThanOrEqual(1);
  });

  it('crops at random along the longer side, as RandomCrop, and flips left to right', async () => {
    // A 30x20 picture whose column x holds the value x in every channel.
    const picture = { width: 30, height: 20, data: new Uint8Array(30 * 20 * 3).map((_, i) => Math.floor(i / 3) % 30) };
    const column = (pixels: { data: Float32Array }, x: number) => Math.round((pixels.data[x] + 1) * 127.5);
    // Offsets 0..10, each as likely: u in [k/11, (k+1)/11) starts the crop at column k.
    expect(cropOrigin(picture, 20, { crop: 0.01 })).toEqual([0, 0]);
    expect(cropOrigin(picture, 20, { crop: 0.999 })).toEqual([10, 0]);
    expect(cropOrigin(picture, 20, { crop: 'center' })).toEqual([5, 0]);
    expect(cropOrigin({ width: 20, height: 31 }, 20, { crop: 0.5 })).toEqual([0, 6]);
    const rng = new Rng(1);
    const offsets = new Set(Array.from({ length: 200 }, () => cropOrigin(picture, 20, { crop: rng.nextUniform() })[0]));
    expect([...offsets].sort((a, b) => a - b)).toEqual(Array.from({ length: 11 }, (_, i) => i));
    const at7 = trainingPixels(picture, 20, { crop: 7 / 11, flip: false });
    expect([column(at7, 0), column(at7, 19)]).toEqual([7, 26]);
    const flipped = trainingPixels(picture, 20, { crop: 7 / 11, flip: true });
    expect([column(flipped, 0), column(flipped, 19)]).toEqual([26, 7]);
    expect(() => trainingPixels(picture, 16, { crop: 'center', flip: false })).toThrow(/training resolution 16/);
  });

  it('puts transparent pixels on white', async () => {
    const clear = await sharp({ create: { width: 24, height: 24, channels: 4, background: { r: 255, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
    const { data } = await centerPixels(clear, 20);
    expect(Math.min(...data)).toBeCloseTo(1, 5);
  });

  it('refuses non-images and images smaller than the resolution with typed errors', async () => {
    const tiny = await sharp({ create: { width: 16, height: 24, channels: 3, background: '#ff0000' } }).jpeg().toBuffer();
    await expect(loadTrainingPicture(tiny, 20)).rejects.toMatchObject({ name: 'ImageInputError', code: 'TOO_SMALL' });
    await expect(loadTrainingPicture(new TextEncoder().encode('not an image'), 20)).rejects.toMatchObject({ code: 'NOT_AN_IMAGE' });
    const gif = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#ff0000' } }).gif().toBuffer();
    await expect(loadTrainingPicture(gif, 20)).rejects.toThrow(ImageInputError);
  });
});

describe.skipIf(!hasFixtures)('DreamBooth on tiny-sd15', () => {
  let worker: EngineWorker;
  let models: StableDiffusionModels;
  let reference: Awaited<ReturnType<typeof loadReference>>;
  let tensor: (name: string) => StoredTensor;

  beforeAll(async () => {
    reference = await loadReference();
    tensor = (name) => reference.tensors.get(name)!;
    models = await loadStableDiffusionFrom(new FolderPackSource(join(TINY_SD15, 'pack')));
    worker = new EngineWorker();
  });

  afterAll(async () => {
    await worker?.close();
  });

  const referenceBatch = (): LatentBatch => ({
    latents: toFloat32(tensor('train.latents')),
    noise: toFloat32(tensor('train.noise')),
    timesteps: toIntegers(tensor('train.timesteps')),
    encoderHiddenStates: toFloat32(tensor('train.encoder_hidden_states')),
  });

  it('takes the train step diffusers takes: the reference LoRA after one AdamW step within 1e-5', async () => {
    const config = reference.json.train_lora;
    const beforeFile = await readSafetensors(join(TINY_SD15, 'lora_before.safetensors'));
    const before = parseUNetLora(beforeFile);
    const after = await readSafetensors(join(TINY_SD15, 'lora_after_1step.safetensors'));
    const trainer = await DreamBoothTrainer.create(models, worker, {
      method: { kind: 'lora', rank: config.rank, targets: config.targets },
      batchSize: 1, prior: true, latentSize: 16,
      optimizer: { betas: config.optimizer.betas, eps: config.optimizer.eps, weightDecay: config.optimizer.weight_decay },
      // As the pipeline trains. The reference step is unclipped, and Adam's first step does not depend on the
      // gradient's scale (up to eps), so clipping must leave the result within the tolerance.
      maxGradNorm: 1,
      start: { lora: before },
    });
    try {
      const { loss } = await trainer.step(referenceBatch(), config.optimizer.lr, reference.json.train_full.prior_loss_weight);
      expect(Math.abs(loss - config.loss) / config.loss).toBeLessThan(1e-4);
      const { lora } = trainer.weights();
      expect([...lora!.keys()].sort()).toEqual([...after.keys()].sort());
      let worst = 0;
      let moved = 0;
      for (const [name, expected] of after) {
        const values = toFloat32(expected);
        const start = toFloat32(beforeFile.get(name)!);
        lora!.get(name)!.forEach((x, i) => {
          worst = Math.max(worst, Math.abs(x - values[i]));
          moved = Math.max(moved, Math.abs(values[i] - start[i]));
        });
      }
      expect(worst).toBeLessThan(1e-5);
      expect(moved).toBeGreaterThan(5e-5);
    } finally {
      await trainer.dispose();
    }
  });

  it('trains the target the scheduler names: epsilon or v_prediction', async () => {
    // The base UNet's prediction on the reference batch, computed apart, and both losses on the host.
    const batch = referenceBatch();
    const ddpm = createScheduler('ddpm', models.scheduler.config);
    const latents = Float64Array.from(batch.latents);
    const noise = Float64Array.from(batch.noise);
    const g = new Graph('unet');
    const pred = buildUNet(g, models.unet.config, g.input('sample', 'float32', [2, 4, 16, 16]), g.input('t', 'int64', [2]),
      g.input('states', 'float32', [2, 77, 32]));
    g.output(pred, 'pred');
    attachWeights(g, models.unet.weights);
    const out = (await runGraph(g, {
      sample: new ort.Tensor('float32', Float32Array.from(ddpm.addNoise(latents, noise, batch.timesteps)), [2, 4, 16, 16]),
      t: new ort.Tensor('int64', BigInt64Array.from(batch.timesteps, BigInt), [2]),
      states: new ort.Tensor('float32', batch.encoderHiddenStates, [2, 77, 32]),
    })).pred.data as Float32Array;
    const dreamboothLoss = (target: Float64Array) => {
      const half = target.length / 2;
      let instance = 0;
      let prior = 0;
      target.forEach((y, i) => {
        if (i < half) instance += (out[i] - y) ** 2;
        else prior += (out[i] - y) ** 2;
      });
      return instance / half + 0.5 * prior / half;
    };
    for (const [predictionType, target] of [
      ['epsilon', noise], ['v_prediction', ddpm.getVelocity(latents, noise, batch.timesteps)],
    ] as const) {
      const scheduler = { ...models.scheduler, config: { ...models.scheduler.config, prediction_type: predictionType } };
      // A new LoRA starts with zero up matrices: the base model.
      const trainer = await DreamBoothTrainer.create({ ...models, scheduler }, worker, {
        method: { kind: 'lora', rank: 1 }, batchSize: 1, prior: true, latentSize: 16, rng: new Rng(0),
      });
      try {
        const loss = await trainer.loss(referenceBatch(), 0.5);
        expect(Math.abs(loss - dreamboothLoss(target)) / loss, predictionType).toBeLessThan(1e-5);
      } finally {
        await trainer.dispose();
      }
    }
    const sample = { ...models.scheduler, config: { ...models.scheduler.config, prediction_type: 'sample' } };
    await expect(DreamBoothTrainer.create({ ...models, scheduler: sample }, worker, {
      method: { kind: 'lora', rank: 1 }, batchSize: 1, prior: true, latentSize: 16, rng: new Rng(0),
    })).rejects.toThrow(DreamBoothError);
  });

  it('encodes prompts and images as the frozen encoders do', async () => {
    const encoders = new TrainingEncoders(models, worker, 32);
    try {
      const states = toFloat32(tensor('train.encoder_hidden_states'));
      const row = states.length / 2;
      expect(relativeL2(await encoders.text('a sks dog'), states.subarray(0, row))).toBeLessThan(1e-4);
      expect(relativeL2(await encoders.text('a dog'), states.subarray(row))).toBeLessThan(1e-4);
      // latent_dist, and sample() * scaling_factor with the sample drawn from the rng it is given
      const posterior = await encoders.posterior({ data: toFloat32(tensor('vae.image')), size: 32 });
      const mean = toFloat32(tensor('vae.posterior_mean'));
      const logvar = toFloat32(tensor('vae.posterior_logvar'));
      expect(relativeL2(posterior.mean, mean)).toBeLessThan(1e-4);
      expect(relativeL2(posterior.logvar, logvar)).toBeLessThan(1e-4);
      const eps = new Rng(7).normal(mean.length);
      expect(encoders.sample(posterior, new Rng(7))).toEqual(
        posterior.mean.map((m, i) => (m + Math.exp(0.5 * posterior.logvar[i]) * eps[i]) * models.vae.config.scaling_factor));
    } finally {
      await encoders.close();
    }
  });

  describe('training', () => {
    const RESOLUTION = 32;
    let instance: Example[];
    let prior: Example[];
    let heldOut: LatentBatch[];

    /** A red square on white, placed at (x, y) in a 56x48 photo: it loads 37x32, so random crops move it. */
    const redSquare = (x: number, y: number) => sharp({ create: { width: 56, height: 48, channels: 3, background: '#ffffff' } })
      .composite([{ input: { create: { width: 20, height: 20, channels: 3, background: '#ff0000' } }, left: x, top: y }])
      .png().toBuffer();
    /** An example whose picture is decoded once and kept, counting its loads. */
    const example = async (bytes: Uint8Array, prompt: string, loads?: number[]): Promise<Example> => {
      const picture = await loadTrainingPicture(bytes, RESOLUTION);
      return { image: async () => (loads?.push(1), picture), prompt };
    };
    const center = async (e: Example) => trainingPixels(await e.image(), RESOLUTION, { crop: 'center', flip: false });

    beforeAll(async () => {
      instance = await Promise.all([[18, 14], [14, 16], [22, 12]].map(async ([x, y]) => example(await redSquare(x, y), 'a sks square')));
      const pipeline = new Txt2ImgPipeline(models, worker);
      try {
        const pngs = await generateClassImages(pipeline, { prompt: 'a square', count: 2, seed: 5, steps: 4 });
        prior = await Promise.all(pngs.map((png) => example(png, 'a square')));
      } finally {
        await pipeline.close();
      }
      // Fixed noise and timesteps over the instance images (each batch: one instance row, one prior row).
      const encoders = new TrainingEncoders(models, worker, RESOLUTION);
      try {
        const rng = new Rng(99);
        heldOut = [];
        for (const [i, t] of [[0, 150], [1, 400], [2, 650], [0, 900]]) {
          const latents = new Float32Array([
            ...encoders.sample(await encoders.posterior(await center(instance[i])), rng),
            ...encoders.sample(await encoders.posterior(await center(prior[i % 2])), rng),
          ]);
          const encoderHiddenStates = new Float32Array([...await encoders.text(instance[i].prompt), ...await encoders.text(prior[0].prompt)]);
          heldOut.push({ latents, noise: rng.normalFloat32(latents.length), timesteps: [t, t], encoderHiddenStates });
        }
      } finally {
        await encoders.close();
      }
    });

    const request = (overrides: Partial<DreamBoothRequest> = {}): DreamBoothRequest => ({
      instance, prior, method: { kind: 'lora', rank: 4 }, steps: 3, learningRate: 1e-3, seed: 11, resolution: RESOLUTION, ...overrides,
    });

    /** Mean held-out loss of the base model with `start` applied (or the base model alone). */
    async function heldOutLoss(method: DreamBoothRequest['method'], start?: TrainingStart): Promise<number> {
      const trainer = await DreamBoothTrainer.create(models, worker, {
        method, batchSize: 1, prior: true, latentSize: RESOLUTION / 2, start, rng: new Rng(0),
      });
      try {
        let total = 0;
        for (const batch of heldOut) total += await trainer.loss(batch);
        return total / heldOut.length;
      } finally {
        await trainer.dispose();
      }
    }

    it('class images are PNGs fixed by the seed, image i by seed + i', async () => {
      const pipeline = new Txt2ImgPipeline(models, worker);
      try {
        const done: number[] = [];
        const three = await generateClassImages(pipeline, { prompt: 'a square', count: 3, seed: 4, steps: 4 }, { onImage: (n) => done.push(n) });
        expect(done).toEqual([1, 2, 3]);
        const again = await generateClassImages(pipeline, { prompt: 'a square', count: 2, seed: 5, steps: 4 });
        expect(again[0].equals(three[1])).toBe(true);
        expect(again[1].equals(three[2])).toBe(true);
        expect(three[0].equals(three[1])).toBe(false);
        expect((await sharp(three[0]).metadata()).format).toBe('png');
      } finally {
        await pipeline.close();
      }
    });

    it('samples each row\'s posterior afresh every step, and loads an image only to encode a view not yet cached', async () => {
      const loads = { instance: [] as number[], prior: [] as number[] };
      const one = await example(await redSquare(18, 14), 'a sks square', loads.instance);
      const priors = await Promise.all(Array.from({ length: 10 }, async (_, i) => example(await redSquare(10 + i, 12), 'a square', loads.prior)));
      const encoders = new TrainingEncoders(models, worker, RESOLUTION);
      try {
        const batches = new TrainingBatches(encoders, { instance: [one], prior: priors }, {
          resolution: RESOLUTION, perStep: 1, crop: 'center', flip: false, order: { instance: [0], prior: [...Array(10).keys()] },
        });
        const rng = new Rng(3);
        const first = await batches.rows(0, rng);
        const second = await batches.rows(1, rng);
        expect(first.rows).toBe(2);
        // The instance was loaded once (its posterior is cached); of ten prior images, the two the steps used.
        expect(loads.instance.length).toBe(1);
        expect(loads.prior.length).toBe(2);
        const row = first.latents.length / 2;
        const posterior = await encoders.posterior(await center(one));
        // Both steps sample the one image's posterior (within a few standard deviations of its mean), each its own sample.
        for (const rows of [first, second]) {
          const latents = rows.latents.subarray(0, row);
          const z = latents.map((x, i) => (x / models.vae.config.scaling_factor - posterior.mean[i]) / Math.exp(0.5 * posterior.logvar[i]));
          expect(Math.max(...z.map(Math.abs))).toBeLessThan(6);
        }
        expect(second.latents.subarray(0, row)).not.toEqual(first.latents.subarray(0, row));
      } finally {
        await encoders.close();
      }
    });

    it('accumulates gradients exactly: batchSize x gradientAccumulation examples a step, the mean loss of the micro-batches', async () => {
      // The loss of one step over 2 + 2 rows is the mean of its two micro-batches' losses (1 + 1 rows), so its gradient is their mean gradient.
      const [a, b] = heldOut;
      const rowsOf = (batch: LatentBatch, half: number) => {
        const n = batch.latents.length / 2;
        const s = batch.encoderHiddenStates.length / 2;
        return { latents: batch.latents.subarray(half * n, (half + 1) * n), noise: batch.noise.subarray(half * n, (half + 1) * n),
          timesteps: [batch.timesteps[half]], states: batch.encoderHiddenStates.subarray(half * s, (half + 1) * s) };
      };
      const join = (...parts: ReturnType<typeof rowsOf>[]): LatentBatch => ({
        latents: new Float32Array(parts.flatMap((p) => [...p.latents])), noise: new Float32Array(parts.flatMap((p) => [...p.noise])),
        timesteps: parts.flatMap((p) => p.timesteps), encoderHiddenStates: new Float32Array(parts.flatMap((p) => [...p.states])),
      });
      const big = join(rowsOf(a, 0), rowsOf(b, 0), rowsOf(a, 1), rowsOf(b, 1));
      const one = await DreamBoothTrainer.create(models, worker, { method: { kind: 'lora', rank: 4 }, batchSize: 1, prior: true, latentSize: 16, rng: new Rng(0) });
      const two = await DreamBoothTrainer.create(models, worker, { method: { kind: 'lora', rank: 4 }, batchSize: 2, prior: true, latentSize: 16, rng: new Rng(0) });
      try {
        const micro = ((await one.loss(a, 0.7)) + (await one.loss(b, 0.7))) / 2;
        expect(Math.abs((await two.loss(big, 0.7)) - micro) / micro).toBeLessThan(1e-5);
      } finally {
        await one.dispose();
        await two.dispose();
      }
      // And the pipeline trains batchSize x gradientAccumulation rows of each set a step.
      const accumulated = await trainDreamBooth(models, request({ batchSize: 2, gradientAccumulation: 2 }), { worker });
      const wide = await trainDreamBooth(models, request({ batchSize: 4 }), { worker });
      const narrow = await trainDreamBooth(models, request({ batchSize: 2 }), { worker });
      expect(accumulated.losses).toEqual(wide.losses);
      for (const [name, data] of wide.lora!) expect(accumulated.lora!.get(name), name).toEqual(data);
      expect(narrow.losses).not.toEqual(wide.losses);
      await expect(trainDreamBooth(models, request({ batchSize: 16, gradientAccumulation: 8 }), { worker })).rejects.toThrow(/at most 64/);
    });

    it('LoRA training lowers the loss on a fixed batch', async () => {
      const progress: DreamBoothProgress[] = [];
      const result = await trainDreamBooth(models, request({ steps: 30 }), { worker, onStep: (p) => progress.push(p) });
      expect(progress.map((p) => p.step)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
      expect(progress.every((p) => p.steps === 30 && p.lr === 1e-3 && Number.isFinite(p.loss))).toBe(true);
      expect(result.losses).toEqual(progress.map((p) => p.loss));
      expect(result.unet).toBeUndefined();
      const lora = parseUNetLora(parseSafetensors(serializeLora(result.lora!, 4)));
      const before = await heldOutLoss({ kind: 'lora', rank: 4 });
      const after = await heldOutLoss({ kind: 'lora', rank: 4 }, { lora });
      expect(after).toBeLessThan(0.95 * before);
    });

    it('full fine-tuning lowers the loss on a fixed batch', async () => {
      const result = await trainDreamBooth(models, request({ method: { kind: 'full' }, steps: 3, learningRate: 1e-4 }), { worker });
      expect(result.lora).toBeUndefined();
      expect([...result.unet!.keys()].sort()).toEqual([...models.unet.weights.keys()].sort());
      const partial = new Map(result.unet!);
      partial.delete('conv_in.bias');
      await expect(trainDreamBooth(models, request({ method: { kind: 'full' }, start: { unet: partial } }), { worker })).rejects.toThrow(/conv_in.bias/);
      const before = await heldOutLoss({ kind: 'full' });
      const after = await heldOutLoss({ kind: 'full' }, { unet: result.unet! });
      expect(after).toBeLessThan(0.95 * before);
    });

    it('gives the same weights bit for bit for the same seed, other weights for another', async () => {
      const first = await trainDreamBooth(models, request(), { worker });
      const second = await trainDreamBooth(models, request(), { worker });
      const third = await trainDreamBooth(models, request({ seed: 12 }), { worker });
      expect(second.losses).toEqual(first.losses);
      for (const [name, data] of first.lora!) expect(second.lora!.get(name), name).toEqual(data);
      expect([...first.lora!].some(([name, data]) => !third.lora!.get(name)!.every((x, i) => x === data[i]))).toBe(true);
    });

    it('continues from a previous LoRA', async () => {
      const previous = await trainDreamBooth(models, request(), { worker });
      const start = { lora: parseUNetLora(parseSafetensors(serializeLora(previous.lora!, 4))) };
      // A vanishing learning rate leaves the start as it was: training began from it.
      const still = await trainDreamBooth(models, request({ start, steps: 1, learningRate: 1e-12 }), { worker });
      for (const [name, data] of previous.lora!) {
        still.lora!.get(name)!.forEach((x, i) => expect(Math.abs(x - data[i])).toBeLessThan(1e-9));
      }
      const continued = await trainDreamBooth(models, request({ start, steps: 6, seed: 13 }), { worker });
      expect(await heldOutLoss({ kind: 'lora', rank: 4 }, { lora: parseUNetLora(parseSafetensors(serializeLora(continued.lora!, 4))) }))
        .toBeLessThan(await heldOutLoss({ kind: 'lora', rank: 4 }, start));
      await expect(trainDreamBooth(models, request({ start, method: { kind: 'lora', rank: 8 } }), { worker }))
        .rejects.toThrow(/rank 4/);
      await expect(trainDreamBooth(models, request({ start, method: { kind: 'full' } }), { worker })).rejects.toThrow(DreamBoothError);
    });

    it('resumes from a checkpoint, stored and read back, to the uninterrupted run\'s weights bit for bit', async () => {
      let loraCheckpoint: DreamBoothCheckpoint | undefined;
      // Random crops, flips and per-step posterior samples all come from the checkpoint's rng.
      const settings = { steps: 5, flip: true, gradientAccumulation: 2 };
      for (const method of [{ kind: 'lora', rank: 4 }, { kind: 'full' }] as const) {
        const whole = await trainDreamBooth(models, request({ method, ...settings }), { worker });
        const saved: DreamBoothCheckpoint[] = [];
        const drain = new AbortController();
        const interrupted = trainDreamBooth(models, request({ method, ...settings }), {
          worker,
          checkpoints: { every: 2, save: async (checkpoint) => void saved.push(checkpoint) },
          drain: drain.signal,
          onStep: ({ step }) => step === 3 && drain.abort(new Error('the worker is stopping')),
        });
        await expect(interrupted).rejects.toThrow('the worker is stopping');
        // Every 2 steps, then where the drain found it.
        expect(saved.map((c) => c.step)).toEqual([2, 3]);
        loraCheckpoint ??= saved[0];
        for (const checkpoint of saved) {
          const resume = parseDreamBoothCheckpoint(serializeDreamBoothCheckpoint(checkpoint));
          const resumed = await trainDreamBooth(models, request({ method, ...settings, resume }), { worker });
          expect(resumed.losses).toEqual(whole.losses);
          const [expected, actual] = [whole.lora ?? whole.unet!, resumed.lora ?? resumed.unet!];
          expect(actual.size).toBe(expected.size);
          for (const [name, data] of expected) expect(actual.get(name), `${method.kind} ${name} from step ${checkpoint.step}`).toEqual(data);
        }
      }
      const resume = loraCheckpoint;
      await expect(trainDreamBooth(models, request({ steps: 5, seed: 12, resume }), { worker })).rejects.toThrow(DreamBoothError);
      await expect(trainDreamBooth(models, request({ steps: 2, resume }), { worker })).rejects.toThrow(/step 2/);
      expect(() => parseDreamBoothCheckpoint(serializeLora(new Map(), 4))).toThrow(DreamBoothError);
    }, 600_000);

    it('stops between steps when cancelled and returns nothing', async () => {
      const controller = new AbortController();
      const steps: number[] = [];
      const run = trainDreamBooth(models, request({ steps: 5 }), {
        worker, signal: controller.signal,
        onStep: ({ step }) => {
          steps.push(step);
          if (step === 2) controller.abort(new Error('cancelled by the user'));
        },
      });
      await expect(run).rejects.toThrow('cancelled by the user');
      expect(steps).toEqual([1, 2]);
    });

    it('refuses bad requests with DreamBoothError before training', async () => {
      const steps: number[] = [];
      const onStep = ({ step }: DreamBoothProgress) => steps.push(step);
      await expect(trainDreamBooth(models, request({ instance: [] }), { worker, onStep })).rejects.toThrow(/instance/);
      await expect(trainDreamBooth(models, request({ resolution: 64 }), { worker, onStep })).rejects.toThrow(/training resolution 64/);
      await expect(trainDreamBooth(models, request({ steps: 0 }), { worker, onStep })).rejects.toThrow(DreamBoothError);
      await expect(trainDreamBooth(models, request({ method: { kind: 'lora', rank: 0 } }), { worker, onStep })).rejects.toThrow(DreamBoothError);
      expect(steps).toEqual([]);
    });
  });
});
