/**
 * A full-size Stable Diffusion 1.5 UNet (860M parameters, random weights) on CPU: graph build time, seconds
 * per UNet step at 64x64 latents with batch 2 (one step of classifier-free guidance), and peak resident memory.
 * Run alone: `npm run bench:sd15-cpu` (STEPS=n for more timed steps; the first run is reported apart).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph, saveWithExternalData } from '../src/engine/graph';
import { expectedWeights } from '../src/engine/models/params';
import { buildUNet, parseUNetConfig } from '../src/engine/models/unet';
import { Rng } from '../src/engine/random';
import { EngineWorker, memoryStats } from '../src/engine/runtime';
import { randomWeights, SD15_UNET_CONFIG } from './sd15';

const BATCH = 2;
const LATENT = 64;
const TOKENS = 77;
const STEPS = Number(process.env.STEPS ?? 2);

const seconds = (since: number) => (performance.now() - since) / 1000;
const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
const log = (line: string) => console.log(`[sd15-cpu] ${line}`);

async function main(): Promise<void> {
  log(`${STEPS} timed step(s), batch ${BATCH}, latents ${LATENT}x${LATENT}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  let start = performance.now();
  const g = new Graph('sd15_unet');
  const out = buildUNet(g, parseUNetConfig(SD15_UNET_CONFIG),
    g.input('sample', 'float32', [BATCH, 4, LATENT, LATENT]),
    g.input('timesteps', 'int64', [BATCH]),
    g.input('encoder_hidden_states', 'float32', [BATCH, TOKENS, 768]));
  g.output(out, 'out');
  const buildSeconds = seconds(start);
  const parameters = [...expectedWeights(g).values()].reduce((sum, shape) => sum + shape.reduce((a, b) => a * b, 1), 0);
  log(`graph build: ${buildSeconds.toFixed(2)} s (${g.nodes.length} nodes, ${g.weights.size} weights, ${(parameters / 1e6).toFixed(1)}M parameters)`);

  start = performance.now();
  randomWeights(g);
  log(`random weights: ${seconds(start).toFixed(1)} s (${gib(parameters * 4)})`);

  // Over 2 GB, so the weights go to an external data file that onnxruntime reads from the path.
  const dir = mkdtempSync(join(tmpdir(), 'sd15-cpu-'));
  const worker = new EngineWorker({ device: 'cpu' });
  try {
    start = performance.now();
    const key = saveWithExternalData(g, join(dir, 'unet.onnx'));
    log(`serialize with external data: ${seconds(start).toFixed(1)} s`);
    // One copy of the weights at a time: drop the JS arrays before onnxruntime loads its own.
    for (const entry of g.weights.values()) entry.data = undefined;
    // V8 frees array buffers on a background sweeper after a collection: collect, let it run, collect again.
    const gc = (globalThis as { gc?: () => void }).gc;
    if (!gc) throw new Error('run with --expose-gc (npm run bench:sd15-cpu does)');
    gc();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    gc();
    const memory = memoryStats();
    log(`peak RSS before the session: ${gib(memory.peakRssBytes)}, RSS now ${gib(memory.rssBytes)}`);

    start = performance.now();
    const session = await worker.createSession({ path: join(dir, 'unet.onnx') }, { key });
    log(`session create: ${seconds(start).toFixed(1)} s`);

    const rng = new Rng(0);
    const feeds = () => ({
      sample: { dtype: 'float32' as const, dims: [BATCH, 4, LATENT, LATENT], data: rng.normalFloat32(BATCH * 4 * LATENT * LATENT) },
      timesteps: { dtype: 'int64' as const, dims: [BATCH], data: BigInt64Array.of(981n, 981n) },
      encoder_hidden_states: { dtype: 'float32' as const, dims: [BATCH, TOKENS, 768], data: rng.normalFloat32(BATCH * TOKENS * 768) },
    });
    const times: number[] = [];
    for (let step = 0; step <= STEPS; step++) {
      start = performance.now();
      const result = await worker.run(session, feeds());
      times.push(seconds(start));
      const values = result.out.data as Float32Array;
      if (!values.every(Number.isFinite)) throw new Error('the UNet produced non-finite values');
      log(`${step === 0 ? 'first run (warm-up)' : `step ${step}`}: ${times[step].toFixed(2)} s`);
    }
    const timed = times.slice(1);
    await worker.release(session);
    const perStep = timed.reduce((a, b) => a + b, 0) / timed.length;
    log(`RESULT seconds per UNet step (batch ${BATCH}, 64x64 latents): ${perStep.toFixed(2)}`);
    log(`RESULT graph build: ${buildSeconds.toFixed(2)} s`);
    log(`RESULT peak memory (maxRSS): ${gib(memoryStats().peakRssBytes)}`);
  } finally {
    await worker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
