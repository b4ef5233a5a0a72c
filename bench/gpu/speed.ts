import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { buildTrainStep, saveBuilt, Trainer } from '../../src/engine/autodiff';
import { add, chunk, Graph, mul, reduceMean, saveWithExternalData, serialize, sub, type Tensor } from '../../src/engine/graph';
import { LoraSlots } from '../../src/engine/models/lora';
import { FLOAT32, precisionFor } from '../../src/engine/models/precision';
import { buildUNet, parseUNetConfig } from '../../src/engine/models/unet';
import { buildVaeDecoder, parseVaeConfig } from '../../src/engine/models/vae';
import { Rng } from '../../src/engine/random';
import { type EngineDevice, type EngineWorker, type TensorData } from '../../src/engine/runtime';
import { relativeL2 } from '../../test/helpers/relative-l2';
import { type GpuMemorySampler } from './gpu-memory';
import { randomWeights, SD15_UNET_CONFIG, SD15_VAE_CONFIG } from '../sd15';

export interface Timing {
  /** ms */
  median: number;
  min: number;
  max: number;
  runs: number;
  /** every timed run, in order (ms) */
  all: number[];
}

export interface SpeedOptions {
  /** Latent side (64 = 512 px). */
  latent: number;
  /** `tiny` narrows the models' channels, for a quick check of the bench itself on a CPU. */
  scale: 'sd15' | 'tiny';
  warmup: number;
  runs: number;
  /** Where the model files go; `feeds.json` beside them lists each model's inputs (for `profile`). */
  dir: string;
  log: (line: string) => void;
  memory: GpuMemorySampler;
  /** Also time the LoRA train step (most of the bench's time: its session and external data). */
  train: boolean;
  /** Sets the precision timed beside float32: the device's own (`precisionFor`). */
  device: EngineDevice;
  /** Also time the UNet on onnxruntime directly on this thread, to see what the engine worker adds. */
  direct?: { onnxruntimeModule: string; device: string };
}

const BATCH = 2;
const TOKENS = 77;

export function summarize(ms: number[]): Timing {
  const sorted = [...ms].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], runs: sorted.length, all: ms.map((x) => +x.toFixed(2)) };
}

async function time(warmup: number, runs: number, once: () => Promise<void>): Promise<Timing> {
  for (let i = 0; i < warmup; i++) await once();
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await once();
    ms.push(performance.now() - start);
  }
  return summarize(ms);
}

const unetConfig = (scale: SpeedOptions['scale']) =>
  parseUNetConfig(scale === 'sd15' ? SD15_UNET_CONFIG : { ...SD15_UNET_CONFIG, block_out_channels: [32, 64, 128, 128] });
const vaeConfig = (scale: SpeedOptions['scale']) =>
  parseVaeConfig(scale === 'sd15' ? SD15_VAE_CONFIG : { ...SD15_VAE_CONFIG, block_out_channels: [32, 64, 64, 64] });

/** A description of a model's inputs, so another process can feed it random values. */
export type FeedSpec = { name: string; dtype: 'float32' | 'int64'; dims: number[] }[];

export function randomFeeds(spec: FeedSpec, rng: Rng): Record<string, TensorData> {
  return Object.fromEntries(spec.map(({ name, dtype, dims }) => {
    const size = dims.reduce((a, b) => a * b, 1);
    if (dtype === 'int64') return [name, { dtype, dims, data: BigInt64Array.from({ length: size }, (_, i) => BigInt(i % 2 ? 900 : 100)) }];
    if (name === 'lr') return [name, { dtype, dims, data: Float32Array.of(1e-4) }];
    if (name === 'lora_scale') return [name, { dtype, dims, data: Float32Array.of(1) }];
    const values = rng.normalFloat32(size);
    // second moments are never negative
    return [name, { dtype, dims, data: name.startsWith('v.') ? values.map(Math.abs) : values }];
  }));
}

/** Fresh copies of `feeds`: a run takes its feeds' buffers, and drawing new values would be timed with it. */
export const copies = (feeds: Record<string, TensorData>): Record<string, TensorData> =>
  Object.fromEntries(Object.entries(feeds).map(([name, t]) => [name, { ...t, data: t.data.slice() } as TensorData]));

const specOf = (g: Graph): FeedSpec => g.inputs.map((t) => ({ name: t.name, dtype: t.dtype as 'float32' | 'int64', dims: [...t.shape] }));

/**
 * The three timings the diffusers baseline also takes: a guided UNet step (batch 2), a VAE decode of one
 * image, and a DreamBooth-LoRA train step (rank 4 on to_q/k/v/out, batch 2, frozen UNet as initializers).
 */
export async function speed(worker: EngineWorker, options: SpeedOptions): Promise<Record<string, unknown>> {
  const { latent, log, memory, dir } = options;
  const results: Record<string, unknown> = {};
  const feedSpecs: Record<string, FeedSpec> = {};
  const rng = new Rng(1);
  const weights = new Map<string, Float32Array>();
  const seconds = (since: number) => +((performance.now() - since) / 1000).toFixed(2);

  // Guided UNet step (cond + uncond rows in one batch), then the VAE decode of one image (latent x 8 pixels), each
  // in float32 (TF32 unless NVIDIA_TF32_OVERRIDE=0) and in the device's float16: timings, and the float16 output's
  // distance from the float32 one on the same weights and feeds.
  const precisions = [...new Set([FLOAT32, precisionFor(options.device)])];
  const unetFeeds = randomFeeds([
    { name: 'sample', dtype: 'float32', dims: [BATCH, 4, latent, latent] },
    { name: 'timesteps', dtype: 'int64', dims: [BATCH] },
    { name: 'encoder_hidden_states', dtype: 'float32', dims: [BATCH, TOKENS, 768] },
  ], rng);
  const unetOutputs: Float32Array[] = [];
  for (const precision of precisions) {
    const tag = precision.dtype === 'float16' ? 'fp16' : 'fp32';
    let start = performance.now();
    const g = new Graph(`sd15_unet_${tag}`);
    g.output(buildUNet(g, unetConfig(options.scale), g.input('sample', 'float32', [BATCH, 4, latent, latent]),
      g.input('timesteps', 'int64', [BATCH]), g.input('encoder_hidden_states', 'float32', [BATCH, TOKENS, 768]), { precision }), 'out');
    randomWeights(g, weights);
    log(`unet ${tag}: build + random weights ${seconds(start)} s`);
    start = performance.now();
    const path = join(dir, `unet-${tag}.onnx`);
    const key = saveWithExternalData(g, path);
    feedSpecs[`unet-${tag}`] = specOf(g);
    log(`unet ${tag}: external data written in ${seconds(start)} s`);
    memory.reset();
    const before = memory.current();
    start = performance.now();
    const session = await worker.createSession({ path }, { key });
    results[`unet_${tag}_session_create_s`] = seconds(start);
    let out: Float32Array | undefined;
    const timing = await time(options.warmup, options.runs, async () => {
      out = (await worker.run(session, copies(unetFeeds))).out.data as Float32Array;
      if (!out.every(Number.isFinite)) throw new Error(`the ${tag} UNet produced non-finite values`);
    });
    unetOutputs.push(out!);
    results[`unet_step_cfg_b2_${tag}_ms`] = timing;
    results[`unet_${tag}_gpu_mib`] = { before, peak: memory.peak() };
    log(`unet ${tag}: session ${results[`unet_${tag}_session_create_s`]} s, guided step median ${timing.median.toFixed(1)} ms (${timing.min.toFixed(1)}-${timing.max.toFixed(1)}, ${timing.runs} runs), GPU MiB ${before} -> peak ${memory.peak()}`);
    await worker.release(session);
    if (options.direct && precision !== FLOAT32) {
      const ort = createRequire(import.meta.url)(options.direct.onnxruntimeModule);
      const direct = await ort.InferenceSession.create(path, { executionProviders: [options.direct.device], graphOptimizationLevel: 'all', logSeverityLevel: 3 });
      const directTiming = await time(options.warmup, options.runs, async () => {
        await direct.run(Object.fromEntries(Object.entries(copies(unetFeeds)).map(([name, t]) => [name, new ort.Tensor(t.dtype, t.data, t.dims)])));
      });
      await direct.release();
      results[`unet_step_cfg_b2_${tag}_direct_ort_ms`] = directTiming;
      log(`unet ${tag}: same model on onnxruntime directly, no worker: median ${directTiming.median.toFixed(1)} ms (${directTiming.min.toFixed(1)}-${directTiming.max.toFixed(1)})`);
    }
  }
  if (unetOutputs.length === 2) {
    results.unet_fp16_vs_fp32_rel_l2 = relativeL2(unetOutputs[1], unetOutputs[0]);
    log(`unet: fp16 output vs fp32, relative L2 ${(results.unet_fp16_vs_fp32_rel_l2 as number).toExponential(2)}`);
  }

  const vaeFeeds = randomFeeds([{ name: 'latents', dtype: 'float32', dims: [1, 4, latent, latent] }], rng);
  const vaeOutputs: Float32Array[] = [];
  const vaeWeights = new Map<string, Float32Array>();
  for (const precision of precisions) {
    const tag = precision.dtype === 'float16' ? 'fp16' : 'fp32';
    const g = new Graph(`sd15_vae_decoder_${tag}`);
    g.output(buildVaeDecoder(g, vaeConfig(options.scale), g.input('latents', 'float32', [1, 4, latent, latent]), { precision }), 'decoded');
    randomWeights(g, vaeWeights);
    feedSpecs[`vae-${tag}`] = specOf(g);
    const model = serialize(g);
    writeFileSync(join(dir, `vae-${tag}.onnx`), model);
    const start = performance.now();
    memory.reset();
    const session = await worker.createSession(model);
    results[`vae_${tag}_session_create_s`] = seconds(start);
    let out: Float32Array | undefined;
    const timing = await time(options.warmup, options.runs, async () => {
      out = (await worker.run(session, copies(vaeFeeds))).decoded.data as Float32Array;
    });
    if (!out!.every(Number.isFinite)) throw new Error(`the ${tag} VAE decoder produced non-finite values`);
    vaeOutputs.push(out!);
    results[`vae_decode_${tag}_ms`] = timing;
    results[`vae_${tag}_gpu_mib_peak`] = memory.peak();
    log(`vae ${tag}: session ${results[`vae_${tag}_session_create_s`]} s, decode ${latent * 8} px median ${timing.median.toFixed(1)} ms (${timing.min.toFixed(1)}-${timing.max.toFixed(1)})`);
    await worker.release(session);
  }
  if (vaeOutputs.length === 2) {
    results.vae_fp16_vs_fp32_rel_l2 = relativeL2(vaeOutputs[1], vaeOutputs[0]);
    log(`vae: fp16 output vs fp32, relative L2 ${(results.vae_fp16_vs_fp32_rel_l2 as number).toExponential(2)}`);
  }

  // DreamBooth-LoRA train step: loss = mse(instance) + mse(prior), forward + backward + AdamW in one session
  if (options.train) {
    let start = performance.now();
    const g = new Graph('sd15_lora_train');
    const slots = new LoraSlots(g, 4);
    const noisy = g.input('noisy_latents', 'float32', [BATCH, 4, latent, latent]);
    const noise = g.input('noise', 'float32', [BATCH, 4, latent, latent]);
    const pred = buildUNet(g, unetConfig(options.scale), noisy, g.input('timesteps', 'int64', [BATCH]),
      g.input('encoder_hidden_states', 'float32', [BATCH, TOKENS, 768]), { linear: slots.linear });
    const mse = (a: Tensor, b: Tensor) => reduceMean(mul(sub(a, b), sub(a, b)), [0, 1, 2, 3], false);
    const [predInstance, predPrior] = chunk(pred, 2, 0);
    const [noiseInstance, noisePrior] = chunk(noise, 2, 0);
    const loss = add(mse(predInstance, noiseInstance), mse(predPrior, noisePrior));
    const all = randomWeights(g, weights);
    const trainable = [...slots.names()];
    const built = buildTrainStep({ graph: g, loss, trainable });
    results.train_graph_nodes = g.nodes.length;
    results.lora_params = trainable.reduce((n, name) => n + all.get(name)!.length, 0);
    log(`train: build + gradients ${seconds(start)} s (${g.nodes.length} nodes, ${results.lora_params} LoRA parameters)`);
    start = performance.now();
    const saved = saveBuilt(built, join(dir, 'train.onnx'));
    feedSpecs.train = specOf(g); // the packed params and moments are graph inputs too
    log(`train: external data written in ${seconds(start)} s`);
    memory.reset();
    const before = memory.current();
    start = performance.now();
    const trainer = await Trainer.create(worker, saved, Object.fromEntries(trainable.map((name) => [name, all.get(name)!])));
    results.train_session_create_s = seconds(start);
    const batch = randomFeeds(feedSpecs.train.filter((s) => saved.batch.some((b) => b.name === s.name)), rng);
    let lossValue = NaN;
    const timing = await time(options.warmup, options.runs, async () => {
      lossValue = (await trainer.step(batch, 1e-4)).loss;
    });
    if (!Number.isFinite(lossValue)) throw new Error('the train step produced a non-finite loss');
    results.lora_train_step_b2_ms = timing;
    results.lora_train_gpu_mib = { before, peak: memory.peak() };
    log(`train: session ${results.train_session_create_s} s, step median ${timing.median.toFixed(1)} ms (${timing.min.toFixed(1)}-${timing.max.toFixed(1)}), loss ${lossValue.toFixed(4)}, GPU MiB ${before} -> peak ${memory.peak()}`);
    await trainer.dispose();
  }
  writeFileSync(join(dir, 'feeds.json'), JSON.stringify(feedSpecs));
  return results;
}
