/**
 * Training memory on CPU (issue 9): one DreamBooth-LoRA step (rank 4 on to_q/to_k/to_v/to_out.0, 1 instance + 1
 * prior row) on a Stable Diffusion 1.5-shaped UNet with random weights, at 512 px (64x64 latents) unless
 * RESOLUTION says otherwise. Prints the resident memory at each stage, its peak (process maxRSS, and the peaks of
 * anonymous and file-backed pages sampled every 100 ms from /proc/self/status) and the seconds per step.
 * `npm run bench:memory`; run it alone: it needs both cores and up to 14 GiB. STEPS=n timed steps after the
 * warm-up (default 1); RECOMPUTE=on|off forces activation recomputation (default: the trainer's own estimate);
 * ORT_OPT=disabled|basic|extended|all sets onnxruntime's graph optimization level (default all).
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { DreamBoothTrainer } from '../src/engine/pipelines';
import { Rng } from '../src/engine/random';
import { EngineWorker, type GraphOptimizationLevel, memoryStats } from '../src/engine/runtime';
import { sd15LoraModels, timeLoraSteps } from './sd15';

const RESOLUTION = Number(process.env.RESOLUTION ?? 512);
const STEPS = Number(process.env.STEPS ?? 1);

const seconds = (since: number) => (performance.now() - since) / 1000;
const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
const log = (line: string) => console.log(`[memory] ${line}`);

/** RssAnon and RssFile of this process (worker threads included), in bytes. */
function residentParts(): { anon: number; file: number } {
  const status = readFileSync('/proc/self/status', 'utf8');
  const kib = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) * 1024;
  return { anon: kib('RssAnon'), file: kib('RssFile') + kib('RssShmem') };
}

/** Samples the resident parts on the main thread, which is idle while the engine worker runs a step. */
class PeakSampler {
  anon = 0;
  file = 0;
  readonly #timer = setInterval(() => this.sample(), 100);

  sample(): void {
    const { anon, file } = residentParts();
    this.anon = Math.max(this.anon, anon);
    this.file = Math.max(this.file, file);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

function stage(name: string): void {
  const { anon, file } = residentParts();
  log(`${name}: RSS ${gib(memoryStats().rssBytes)} (anonymous ${gib(anon)}, file-backed ${gib(file)})`);
}

async function main(): Promise<void> {
  const latent = RESOLUTION / 8;
  log(`SD 1.5 UNet (random weights), LoRA rank 4, ${RESOLUTION} px (${latent}x${latent} latents), 1 instance + 1 prior row; `
    + `load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  const sampler = new PeakSampler();
  const models = sd15LoraModels();
  stage('random weights');
  const level = (process.env.ORT_OPT ?? 'all') as GraphOptimizationLevel;
  log(`onnxruntime graph optimization ${level}`);
  const worker = new EngineWorker({ graphOptimizationLevel: level });
  try {
    const start = performance.now();
    const recompute = process.env.RECOMPUTE === undefined ? undefined : process.env.RECOMPUTE === 'on';
    const trainer = await DreamBoothTrainer.create(models, worker, {
      method: { kind: 'lora', rank: 4 }, batchSize: 1, prior: true, latentSize: latent, maxGradNorm: 1, rng: new Rng(0), recompute,
    });
    log(`RESULT compile + session: ${seconds(start).toFixed(1)} s; recomputation ${trainer.recomputes ? 'on' : 'off'}`);
    stage('session created');
    const times = await timeLoraSteps(trainer, latent, STEPS, log, (step) => stage(`after step ${step}`));
    await trainer.dispose();
    const timed = times.slice(1);
    sampler.sample();
    log(`RESULT seconds per LoRA step (${RESOLUTION} px, 1+1 rows): ${(timed.reduce((a, b) => a + b, 0) / timed.length).toFixed(1)} `
      + `(warm-up ${times[0].toFixed(1)})`);
    log(`RESULT peak RSS (maxRSS): ${gib(memoryStats().peakRssBytes)}; sampled peaks: anonymous ${gib(sampler.anon)}, `
      + `file-backed ${gib(sampler.file)}`);
  } finally {
    sampler.stop();
    await worker.close();
  }
}

await main();
