/**
 * DreamBooth training speed. `npm run bench:dreambooth`; results go in bench/RESULTS.md.
 *
 * 1. tiny-sd15 (../shared/fixtures; the bundled random tiny pack without them): `trainDreamBooth` at its native
 *    32 px, one instance + one prior image per step, LoRA rank 4 and full fine-tuning: compile + first step, then
 *    steps per second.
 * 2. With SD15=1: one DreamBooth LoRA step (rank 4 on to_q/to_k/to_v/to_out.0, one instance + one prior row) on a
 *    Stable Diffusion 1.5-shaped UNet with random weights at 512 px (64x64 latents; RESOLUTION=256 for 32x32):
 *    compile time, seconds per step, peak memory. It needs both cores and many GB: run it alone.
 */
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { BUNDLED_TINY_SD, createRandomPack } from '../src/engine/packs';
import {
  DreamBoothTrainer, type Example, loadStableDiffusion, loadTrainingPicture, trainDreamBooth,
  type TrainingMethod,
} from '../src/engine/pipelines';
import { Rng } from '../src/engine/random';
import { EngineWorker, type GraphOptimizationLevel, memoryStats } from '../src/engine/runtime';
import { FolderPackSource, loadPack, type PackSource } from '../src/engine/weights/pack';
import { sd15LoraModels, timeLoraSteps } from './sd15';

const STEPS = Number(process.env.BENCH_STEPS ?? 10);
const TINY_PACK = join(import.meta.dirname, '../../shared/fixtures/tiny-sd15/pack');

const seconds = (since: number) => (performance.now() - since) / 1000;
const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
const log = (line: string) => console.log(`[dreambooth] ${line}`);

class MemorySource implements PackSource {
  constructor(readonly files: Map<string, Uint8Array>) {}
  async read(path: string) {
    return this.files.get(path)!;
  }
  async exists(path: string) {
    return this.files.has(path);
  }
}

async function tinyPack(worker: EngineWorker): Promise<void> {
  const fixtures = existsSync(TINY_PACK);
  const source = fixtures ? new FolderPackSource(TINY_PACK) : new MemorySource(createRandomPack(BUNDLED_TINY_SD, 0));
  const models = await loadStableDiffusion(await loadPack(source));
  const vaeFactor = 2 ** (models.vae.config.block_out_channels.length - 1);
  const resolution = models.unet.sampleSize * vaeFactor;
  const image = async (color: string) => {
    const picture = await loadTrainingPicture(
      await sharp({ create: { width: resolution, height: resolution, channels: 3, background: color } }).png().toBuffer(), resolution);
    return async () => picture;
  };
  const instance: Example[] = [{ image: await image('#ff0000'), prompt: 'a sks square' }];
  const prior: Example[] = [{ image: await image('#00ff00'), prompt: 'a square' }];
  log(`${fixtures ? 'tiny-sd15 fixture' : 'bundled random tiny'} pack, ${resolution} px, 1 instance + 1 prior row per step, ${STEPS} timed steps`);
  for (const method of [{ kind: 'lora', rank: 4 }, { kind: 'full' }] as TrainingMethod[]) {
    const ends: number[] = [];
    const start = performance.now();
    await trainDreamBooth(models, { instance, prior, method, steps: STEPS + 1, learningRate: 1e-4, seed: 0 }, {
      worker, onStep: () => ends.push(performance.now()),
    });
    const perStep = (ends[ends.length - 1] - ends[0]) / 1000 / STEPS;
    log(`RESULT ${method.kind}: compile + encode + first step ${((ends[0] - start) / 1000).toFixed(2)} s; `
      + `${(1 / perStep).toFixed(2)} steps/s (${(perStep * 1000).toFixed(0)} ms/step)`);
  }
}

async function sd15Lora(worker: EngineWorker): Promise<void> {
  const resolution = Number(process.env.RESOLUTION ?? 512);
  const latent = resolution / 8;
  const models = sd15LoraModels();
  log(`SD 1.5 UNet (random weights), LoRA rank 4, ${resolution} px (${latent}x${latent} latents), rows 1 instance + 1 prior`);
  const start = performance.now();
  const trainer = await DreamBoothTrainer.create(models, worker, {
    method: { kind: 'lora', rank: 4 }, batchSize: 1, prior: true, latentSize: latent, maxGradNorm: 1, rng: new Rng(0),
  });
  log(`RESULT compile (graph, gradients, AdamW, write with external data) + session: ${seconds(start).toFixed(1)} s`);
  const times = await timeLoraSteps(trainer, latent, Number(process.env.SD15_STEPS ?? 2), log);
  await trainer.dispose();
  const timed = times.slice(1);
  log(`RESULT seconds per LoRA step (SD 1.5 shape, ${resolution} px, 1+1 rows): ${(timed.reduce((a, b) => a + b, 0) / timed.length).toFixed(1)}`);
  log(`RESULT peak memory (maxRSS): ${gib(memoryStats().peakRssBytes)}`);
}

async function main(): Promise<void> {
  log(`onnxruntime graph optimization ${process.env.ORT_OPT ?? 'all'}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  // ORT_OPT=disabled|basic|extended|all: onnxruntime's graph optimization level (default all).
  const worker = new EngineWorker({ graphOptimizationLevel: (process.env.ORT_OPT ?? 'all') as GraphOptimizationLevel });
  try {
    await tinyPack(worker);
    if (process.env.SD15 === '1') await sd15Lora(worker);
    else log('SD 1.5 shape skipped: set SD15=1 (needs both cores, many GB of memory and minutes)');
  } finally {
    await worker.close();
  }
}

await main();
