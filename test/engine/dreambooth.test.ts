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
import { ImageInputError, loadTrainingImage } from '../../src/engine/pipelines/images';
import { serializeLora } from '../../src/engine/pipelines/lora-file';
import { attachWeights, loadStableDiffusionFrom, type StableDiffusionModels } from '../../src/engine/pipelines/stable-diffusion';
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

describe('training images', () => {
  it('resizes the shorter side, center-crops and scales to [-1, 1] NCHW', async () => {
    // 60x40: left third blue, the rest red. Cropped to the center 40x40 then shrunk to 20: red, with blue at the left edge.
    const width = 60;
    const height = 40;
    const raw = Buffer.alloc(width * height * 3);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) raw.set(x < 12 ? [0, 0, 255] : [255, 0, 0], (y * width + x) * 3);
    }
    const png = await sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer();
    const { data, size } = await loadTrainingImage(png, 20);
    expect(size).toBe(20);
    expect(data.length).toBe(3 * 20 * 20);
    const at = (c: number, y: number, x: number) => data[c * 400 + y * 20 + x];
    expect(at(0, 10, 10)).toBeCloseTo(1, 5);
    expect(at(2, 10, 10)).toBeCloseTo(-1, 5);
    // 12 of 60 columns are blue; the crop drops 10 from each side, leaving 2 of 40 (one of 20 after the resize).
    expect(at(2, 10, 0)).toBeGreaterThan(0);
    expect(at(2, 10, 3)).toBeCloseTo(-1, 1);
    expect(Math.min(...data)).toBeGreaterThanOrEqual(-1);
    expect(Math.max(...data)).toBeLessThanOrEqual(1);
  });

  it('puts transparent pixels on white', async () => {
    const clear = await sharp({ create: { width: 24, height: 24, channels: 4, background: { r: 255, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
    const { data } = await loadTrainingImage(clear, 20);
    expect(Math.min(...data)).toBeCloseTo(1, 5);
  });

  it('refuses non-images and images smaller than the resolution with typed errors', async () => {
    const tiny = await sharp({ create: { width: 16, height: 24, channels: 3, background: '#ff0000' } }).jpeg().toBuffer();
    await expect(loadTrainingImage(tiny, 20)).rejects.toMatchObject({ name: 'ImageInputError', code: 'TOO_SMALL' });
    await expect(loadTrainingImage(new TextEncoder().encode('not an image'), 20)).rejects.toMatchObject({ code: 'NOT_AN_IMAGE' });
    const gif = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#ff0000' } }).gif().toBuffer();
    await expect(loadTrainingImage(gif, 20)).rejects.toThrow(ImageInputError);
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
      // latent_dist.sample() * scaling_factor, the sample drawn from the rng it is given
      const pixels = { data: toFloat32(tensor('vae.image')), size: 32 };
      const latents = await encoders.latents(pixels, new Rng(7));
      const mean = toFloat32(tensor('vae.posterior_mean'));
      const logvar = toFloat32(tensor('vae.posterior_logvar'));
      const eps = new Rng(7).normal(mean.length);
      const expected = mean.map((m, i) => (m + Math.exp(0.5 * logvar[i]) * eps[i]) * models.vae.config.scaling_factor);
      expect(relativeL2(latents, expected)).toBeLessThan(1e-4);
      // cached: the same image is not sampled again
      expect(await encoders.latents(pixels, new Rng(8))).toBe(latents);
    } finally {
      await encoders.close();
    }
  });

  describe('training', () => {
    const RESOLUTION = 32;
    let instance: Example[];
    let prior: Example[];
    let heldOut: LatentBatch[];

    /** A red square on white, placed at (x, y) in a 48x48 photo. */
    const redSquare = (x: number, y: number) => sharp({ create: { width: 48, height: 48, channels: 3, background: '#ffffff' } })
      .composite([{ input: { create: { width: 20, height: 20, channels: 3, background: '#ff0000' } }, left: x, top: y }])
      .png().toBuffer();

    beforeAll(async () => {
      instance = await Promise.all([[14, 14], [10, 16], [18, 12]].map(async ([x, y]) => ({
        pixels: await loadTrainingImage(await redSquare(x, y), RESOLUTION), prompt: 'a sks square',
      })));
      const pipeline = new Txt2ImgPipeline(models, worker);
      try {
        const pngs = await generateClassImages(pipeline, { prompt: 'a square', count: 2, seed: 5, steps: 4 });
        prior = await Promise.all(pngs.map(async (png) => ({ pixels: await loadTrainingImage(png, RESOLUTION), prompt: 'a square' })));
      } finally {
        await pipeline.close();
      }
      // Fixed noise and timesteps over the instance images (each batch: one instance row, one prior row).
      const encoders = new TrainingEncoders(models, worker, RESOLUTION);
      try {
        const rng = new Rng(99);
        heldOut = [];
        for (const [i, t] of [[0, 150], [1, 400], [2, 650], [0, 900]]) {
          const latents = new Float32Array([...await encoders.latents(instance[i].pixels, rng), ...await encoders.latents(prior[i % 2].pixels, rng)]);
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
      for (const method of [{ kind: 'lora', rank: 4 }, { kind: 'full' }] as const) {
        const whole = await trainDreamBooth(models, request({ method, steps: 5 }), { worker });
        const saved: DreamBoothCheckpoint[] = [];
        const drain = new AbortController();
        const interrupted = trainDreamBooth(models, request({ method, steps: 5 }), {
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
          const resumed = await trainDreamBooth(models, request({ method, steps: 5, resume }), { worker });
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
    });

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
