/**
 * `npm run train:base:samples -- --pack DIR [--log FILE]`: what the base model draws and how well it denoises,
 * into `bench/results/base-model/` (or `--out`):
 * - `styles.png`: held-in subjects in each pretraining style, 4 seeds a row;
 * - `unstyled.png`: the same subjects and a few more without a style word;
 * - `held-out.png`: held-out subjects (never seen in pretraining), for comparison;
 * - `vae.png`: dataset images and their VAE reconstructions (the posterior mean, decoded);
 * - `loss.png`: the pretraining loss curves from train.ts's `log.jsonl`;
 * - `evaluation.json`: the denoising loss on held-in and held-out captions at fixed noise, and generation timing.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { EngineWorker, FolderPackSource, loadStableDiffusionFrom, Txt2ImgPipeline, encodePngs, type StableDiffusionModels } from '../../src/engine';
import { Graph, serialize } from '../../src/engine/graph';
import { buildVaeDecoder, buildVaeEncoder } from '../../src/engine/models/vae';
import { attachWeights, textToImageLoss } from '../../src/engine/pipelines';
import { Rng } from '../../src/engine/random';
import { createScheduler, type DdpmScheduler, resolveSchedulerConfig } from '../../src/engine/schedulers';
import { captionOf, type EmojiDataset, IMAGE_SIZE, readEmojiDataset } from './emoji-records';
import { labeledGrid, lineChart } from './figures';
import sharp from 'sharp';

const { values: OPTIONS } = parseArgs({
  options: {
    pack: { type: 'string', default: 'base-models/emoji-sd-64' },
    data: { type: 'string', default: '.base-model/emoji.gz' },
    log: { type: 'string' },
    out: { type: 'string', default: 'bench/results/base-model' },
    steps: { type: 'string', default: '20' },
    guidance: { type: 'string', default: '7.5' },
  },
});

const SUBJECTS = ['dog face', 'red apple', 'rocket', 'grinning face', 'slice of pizza', 'fire', 'snowman', 'birthday cake'];
const MORE_UNSTYLED = ['cat face', 'sun with face', 'automobile', 'christmas tree'];
const SEEDS = [1, 2, 3, 4];

async function row(pipeline: Txt2ImgPipeline, prompt: string) {
  const result = await pipeline.generate({
    prompt, steps: Number(OPTIONS.steps), guidanceScale: Number(OPTIONS.guidance), numImages: SEEDS.length, seed: SEEDS[0],
  });
  return { label: prompt, images: await encodePngs(result) };
}

/** CHW floats in [-1, 1] of `indices`' images. */
function pixelsOf(data: EmojiDataset, indices: readonly number[]): Float32Array {
  const size = IMAGE_SIZE * IMAGE_SIZE;
  const pixels = new Float32Array(indices.length * 3 * size);
  indices.forEach((index, r) => {
    for (let p = 0; p < size; p++) for (let c = 0; c < 3; c++) pixels[(r * 3 + c) * size + p] = data.images[(index * size + p) * 3 + c] / 127.5 - 1;
  });
  return pixels;
}

/** PNGs of CHW floats in [-1, 1]. */
function pngsOf(chw: Float32Array, count: number): Promise<Buffer[]> {
  const size = IMAGE_SIZE * IMAGE_SIZE;
  return Promise.all(Array.from({ length: count }, (_, r) => {
    const bytes = Buffer.alloc(size * 3);
    for (let p = 0; p < size; p++) for (let c = 0; c < 3; c++) bytes[p * 3 + c] = Math.max(0, Math.min(255, Math.round((chw[(r * 3 + c) * size + p] + 1) * 127.5)));
    return sharp(bytes, { raw: { width: IMAGE_SIZE, height: IMAGE_SIZE, channels: 3 } }).png().toBuffer();
  }));
}

/** Images through the VAE and back (posterior mean, decoded): originals row over reconstructions row. */
async function reconstructions(worker: EngineWorker, models: StableDiffusionModels, data: EmojiDataset, indices: number[]) {
  const g = new Graph('vae_roundtrip');
  const { mean } = buildVaeEncoder(g, models.vae.config, g.input('image', 'float32', [indices.length, 3, IMAGE_SIZE, IMAGE_SIZE]));
  g.output(buildVaeDecoder(g, models.vae.config, mean), 'image_out');
  attachWeights(g, models.vae.weights);
  const session = await worker.createSession(serialize(g));
  const { image_out: out } = await worker.run(session, { image: { dtype: 'float32', dims: [indices.length, 3, IMAGE_SIZE, IMAGE_SIZE], data: pixelsOf(data, indices) } });
  await worker.release(session);
  return [
    { label: 'dataset images', images: await pngsOf(pixelsOf(data, indices), indices.length) },
    { label: 'VAE reconstructions', images: await pngsOf(out.data as Float32Array, indices.length) },
  ];
}

/**
 * Mean denoising loss of `indices`' images under their style captions, at noise and timesteps fixed by `seed`, as
 * epsilon MSE whatever the pack predicts, so packs of either objective compare: a v prediction implies
 * epsilon = sqrt(alphaBar) v + sqrt(1 - alphaBar) x_t, so its epsilon error is its v error times sqrt(alphaBar).
 */
async function denoisingLoss(worker: EngineWorker, models: StableDiffusionModels, data: EmojiDataset, indices: number[], seed: number): Promise<number> {
  const batch = indices.length;
  const latentSize = IMAGE_SIZE / 2;
  const encoder = new Graph('vae_encoder');
  const posterior = buildVaeEncoder(encoder, models.vae.config, encoder.input('image', 'float32', [batch, 3, IMAGE_SIZE, IMAGE_SIZE]));
  encoder.output(posterior.mean, 'mean');
  attachWeights(encoder, models.vae.weights);
  const pixels = pixelsOf(data, indices);
  const encoderSession = await worker.createSession(serialize(encoder));
  const { mean } = await worker.run(encoderSession, { image: { dtype: 'float32', dims: [batch, 3, IMAGE_SIZE, IMAGE_SIZE], data: pixels } });
  await worker.release(encoderSession);
  const { graph, loss } = textToImageLoss(models.textEncoder.config, models.unet.config, models.tokenizer.maxLength, { batchSize: batch, latentSize });
  graph.output(loss, 'loss');
  attachWeights(graph, new Map([...models.unet.weights, ...models.textEncoder.weights]));
  const session = await worker.createSession(serialize(graph));
  const scheduler = createScheduler('ddpm', models.scheduler.config) as DdpmScheduler;
  const predictsVelocity = resolveSchedulerConfig('ddpm', models.scheduler.config).prediction_type === 'v_prediction';
  const rng = new Rng(seed);
  const latents = Float64Array.from(mean.data as Float32Array, (x) => x * models.vae.config.scaling_factor);
  const noise = rng.normal(latents.length);
  // Evenly spread timesteps, so both sets are measured over the same noise levels.
  const timesteps = indices.map((_, i) => Math.floor(((i + 0.5) / batch) * 1000));
  const dims = [batch, 4, latentSize, latentSize];
  const ids = indices.flatMap((index) => models.tokenizer.encodePadded(captionOf(data.records[index], true)));
  const out = await worker.run(session, {
    input_ids: { dtype: 'int64', dims: [batch, models.tokenizer.maxLength], data: BigInt64Array.from(ids, BigInt) },
    noisy_latents: { dtype: 'float32', dims, data: Float32Array.from(scheduler.addNoise(latents, noise, timesteps)) },
    target: { dtype: 'float32', dims, data: Float32Array.from(predictsVelocity ? scheduler.getVelocity(latents, noise, timesteps) : noise) },
    timesteps: { dtype: 'int64', dims: [batch], data: BigInt64Array.from(timesteps, BigInt) },
    row_weights: { dtype: 'float32', dims: [batch], data: Float32Array.from(timesteps, (t) => (predictsVelocity ? scheduler.alphasCumprod[t] : 1)) },
  });
  await worker.release(session);
  return Number(out.loss.data[0]);
}

async function main() {
  const out = OPTIONS.out!;
  await mkdir(out, { recursive: true });
  const models = await loadStableDiffusionFrom(new FolderPackSource(OPTIONS.pack!));
  const worker = new EngineWorker();
  const pipeline = new Txt2ImgPipeline(models, worker);
  try {
    const started = performance.now();
    const first = await row(pipeline, 'a dog face, noto style');
    const secondsFor4 = (performance.now() - started) / 1000;
    const timed = performance.now();
    await row(pipeline, 'a red apple');
    const warmSecondsFor4 = (performance.now() - timed) / 1000;
    const styled = [first];
    for (const subject of SUBJECTS) {
      for (const style of ['noto', 'twemoji']) if (!(subject === 'dog face' && style === 'noto')) styled.push(await row(pipeline, `${captionOf({ subject, style }, true)}`));
    }
    await writeFile(join(out, 'styles.png'), await labeledGrid(styled, { title: 'Held-in subjects in both pretraining styles (seeds 1-4)' }));
    const unstyled = [];
    for (const subject of [...SUBJECTS, ...MORE_UNSTYLED]) unstyled.push(await row(pipeline, captionOf({ subject, style: '' }, false)));
    await writeFile(join(out, 'unstyled.png'), await labeledGrid(unstyled, { title: 'Prompts without a style word (seeds 1-4)' }));

    const data = await readEmojiDataset(OPTIONS.data!);
    const heldOut = data.records.flatMap((r, i) => (r.heldOut ? [i] : []));
    const heldOutRows = [];
    for (const index of heldOut.filter((i) => data.records[i].style === 'noto')) heldOutRows.push(await row(pipeline, captionOf(data.records[index], false)));
    await writeFile(join(out, 'held-out.png'), await labeledGrid(heldOutRows, { title: 'Held-out subjects: never seen in pretraining' }));
    const spread = Array.from({ length: 8 }, (_, i) => Math.floor(((i + 0.5) / 8) * data.records.length));
    await writeFile(join(out, 'vae.png'), await labeledGrid(await reconstructions(worker, models, data, spread), { cell: 96, labelWidth: 200, title: 'VAE: 2x downscale, 4 latent channels' }));
    const rng = new Rng(7);
    const heldIn = data.records.flatMap((r, i) => (r.heldOut ? [] : [i]));
    const sampleHeldIn = Array.from({ length: heldOut.length }, () => heldIn[Math.floor(rng.nextUniform() * heldIn.length)]);
    const evaluation = {
      pack: OPTIONS.pack,
      denoisingLoss: {
        heldIn: await denoisingLoss(worker, models, data, sampleHeldIn, 11),
        heldOut: await denoisingLoss(worker, models, data, heldOut, 11),
        images: heldOut.length,
        note: `mean epsilon MSE (implied by the ${resolveSchedulerConfig('ddpm', models.scheduler.config).prediction_type} prediction) at timesteps spread evenly over [0, 1000), fixed noise, captions with style`,
      },
      generation: { images: 4, steps: Number(OPTIONS.steps), guidance: Number(OPTIONS.guidance), firstSeconds: secondsFor4, warmSeconds: warmSecondsFor4 },
    };
    await writeFile(join(out, 'evaluation.json'), `${JSON.stringify(evaluation, null, 2)}\n`);
    console.log(JSON.stringify(evaluation, null, 2));
    if (OPTIONS.log) {
      // A log may hold a step twice (a run resumed from an earlier checkpoint than its last line): the later line wins.
      const lines = (await readFile(OPTIONS.log, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { stage: string; step: number; loss: number });
      const entries = [...new Map(lines.map((e) => [`${e.stage}:${e.step}`, e])).values()].sort((a, b) => a.step - b.step);
      const series = (stage: string, label: string, color: string) => ({ label, color, points: entries.filter((e) => e.stage === stage).map((e): [number, number] => [e.step, e.loss]) });
      await writeFile(join(out, 'loss.png'), await lineChart([series('unet', 'text encoder + UNet: min-SNR weighted MSE (steps up where the schedule or the objective changed)', '#c0392b')], { title: 'Pretraining loss (mean of 50 steps)', xLabel: 'step', yLabel: 'loss' }));
      await writeFile(join(out, 'vae-loss.png'), await lineChart([series('vae', 'VAE: L1 + KL', '#2c3e50')], { title: 'VAE pretraining loss (mean of 50 steps)', xLabel: 'step', yLabel: 'loss' }));
    }
  } finally {
    await pipeline.close();
    await worker.close();
  }
}

await main();
