/**
 * The engine on a GPU: parity with the float64 fixtures, speed of a full-size SD 1.5 UNet step, VAE decode and
 * DreamBooth-LoRA train step, and per-operator profiles. Bundled by `npm run bench:gpu` into .gpu-stage/gpu.js,
 * which runs under the GPU kit's Node (see bench/RESULTS.md for the device calls):
 *
 *   node .gpu-stage/gpu.js parity    every fixture check on ENGINE_DEVICE (default cuda); run it with and
 *                                    without NVIDIA_TF32_OVERRIDE=0
 *   node .gpu-stage/gpu.js speed     timings (RUNS, WARMUP, LATENT=64, BENCH_SCALE=sd15|tiny, TRAIN=0 skips the train
 *                                    step), models kept in MODELS_DIR;
 *                                    with DIFFUSERS_JSON (diffusers_bench.py's output from the same call), each row
 *                                    beside diffusers' figure and the issue's target
 *   node .gpu-stage/gpu.js profile   onnxruntime's per-operator profile of the models `speed` left in MODELS_DIR
 *                                    (run with CUDA_LAUNCH_BLOCKING=1)
 *
 * onnxruntime-node comes from GPUKIT_ORT (the kit's CUDA build) when set. Results go to OUT (default .gpu-out).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { EngineWorker, parseEngineDevice } from '../src/engine/runtime';
import { GpuMemorySampler } from './gpu/gpu-memory';
import { parityChecks, precisionErrors } from './gpu/parity';
import { precisionFor } from '../src/engine/models/precision';
import { profileModel } from './gpu/profile';
import { fixturesDir, loadReference } from './gpu/reference';
import { compareWithDiffusers, readDiffusersResults } from './gpu/compare';
import { type FeedSpec, speed } from './gpu/speed';

const mode = process.argv[2];
const device = parseEngineDevice(process.env.ENGINE_DEVICE ?? 'cuda');
const onnxruntimeModule = process.env.GPUKIT_ORT;
const out = resolve(process.env.OUT ?? '.gpu-out');
const modelsDir = resolve(process.env.MODELS_DIR ?? '/tmp/gpu-bench-models');
const tf32 = process.env.NVIDIA_TF32_OVERRIDE === '0' ? 'off' : 'on';
const log = (line: string) => console.log(`[gpu ${mode}] ${line}`);

mkdirSync(out, { recursive: true });
mkdirSync(modelsDir, { recursive: true });

async function withWorker<T>(use: (worker: EngineWorker) => Promise<T>): Promise<T> {
  const worker = new EngineWorker({ device, onnxruntimeModule });
  try {
    return await use(worker);
  } finally {
    await worker.close();
  }
}

async function parity(): Promise<void> {
  log(`device ${device}, TF32 ${tf32}`);
  const start = performance.now();
  const precision = precisionFor(device);
  const { checks, measured } = await withWorker(async (worker) => {
    const ref = await loadReference(fixturesDir());
    return {
      checks: await parityChecks(worker, ref, log),
      // The device's own precision when it is not float32: measured against the same reference, not bounded.
      measured: precision.dtype === 'float32' ? [] : await precisionErrors(worker, ref, precision, log),
    };
  });
  const failed = checks.filter((c) => !(c.error < c.bound));
  writeFileSync(join(out, `parity-${device}-tf32-${tf32}.json`), JSON.stringify({ device, tf32, checks, [precision.dtype]: measured }, null, 1));
  log(`${checks.length - failed.length}/${checks.length} within bounds in ${((performance.now() - start) / 1000).toFixed(1)} s` +
    (failed.length ? `; FAILED: ${failed.map((c) => c.name).join(', ')}` : ''));
}

async function timings(): Promise<void> {
  const memory = new GpuMemorySampler();
  memory.start();
  try {
    const options = {
      latent: Number(process.env.LATENT ?? 64),
      scale: process.env.BENCH_SCALE === 'tiny' ? 'tiny' as const : 'sd15' as const,
      warmup: Number(process.env.WARMUP ?? 3),
      runs: Number(process.env.RUNS ?? 25),
      dir: modelsDir,
      log,
      memory,
      device,
      train: process.env.TRAIN !== '0',
      direct: { onnxruntimeModule: onnxruntimeModule ?? 'onnxruntime-node', device },
    };
    log(`device ${device}, TF32 ${tf32}, ${JSON.stringify({ ...options, log: undefined, memory: undefined, direct: undefined })}`);
    const results = await withWorker((worker) => speed(worker, options));
    writeFileSync(join(out, `speed-${device}.json`), JSON.stringify({ device, tf32, ...results }, null, 1));
    console.log(JSON.stringify(results));
    if (process.env.DIFFUSERS_JSON) console.log(compareWithDiffusers(results, readDiffusersResults(process.env.DIFFUSERS_JSON)));
  } finally {
    memory.stop();
  }
}

async function profile(): Promise<void> {
  const specs = JSON.parse(readFileSync(join(modelsDir, 'feeds.json'), 'utf8')) as Record<string, FeedSpec>;
  const runs = Number(process.env.PROFILE_RUNS ?? 2);
  for (const name of (process.env.PROFILE_MODELS ?? 'unet-fp16,vae-fp16,train').split(',')) {
    const start = performance.now();
    const table = await profileModel(onnxruntimeModule ?? 'onnxruntime-node', device, join(modelsDir, `${name}.onnx`), specs[name], runs);
    writeFileSync(join(out, `profile-${name}.txt`), `${table}\n`);
    console.log(table.split('\n').slice(0, 14).join('\n'));
    log(`${name} profiled in ${((performance.now() - start) / 1000).toFixed(1)} s`);
  }
}

const modes: Record<string, () => Promise<void>> = { parity, speed: timings, profile };
if (!modes[mode]) {
  console.error(`usage: node gpu.js ${Object.keys(modes).join('|')}`);
  process.exit(2);
}
await modes[mode]();
