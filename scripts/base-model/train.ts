/**
 * `npm run train:base`: pretrains the platform's base model on the emoji dataset with the engine's own
 * training, stage by stage, each resumable, so that a 10-minute GPU call (or a CPU smoke run) does what its
 * time allows and the next call continues:
 * 1. vocabulary: BPE on the captions plus reserved identifiers;
 * 2. vae: AutoencoderKL on the images (L1 + KL);
 * 3. latents: every image's posterior, and the latent scaling factor (1 / std, as Stable Diffusion's 0.18215);
 * 4. unet: text encoder and UNet together on the denoising loss, min-SNR weighted, with an EMA of the weights;
 * 5. pack: the EMA weights in diffusers layout, float16.
 * State lives in `--run` (full checkpoints). `--export` receives the compact checkpoints, the tokenizer, the
 * scaling factor and the log: what a fresh machine continues from with `--resume-from`, and what the pack is
 * written from here on the CPU (`--minutes 0 --pack`).
 */
import { existsSync } from 'node:fs';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type PretrainStep, textToImageTrainStep, vaeTrainStep } from '../../src/engine/pipelines';
import { FlatLayout, Trainer } from '../../src/engine/autodiff';
import { Graph, serialize } from '../../src/engine/graph';
import { parseClipTextConfig } from '../../src/engine/models/clip-text';
import { declaredTextEncoderWeights } from '../../src/engine/models/declared-weights';
import { parseUNetConfig } from '../../src/engine/models/unet';
import { buildVaeEncoder, parseVaeConfig, type VaeConfig } from '../../src/engine/models/vae';
import { declaredPackWeights, initialWeights, type PackPreset, stableDiffusionPackFiles, writePackToFolder } from '../../src/engine/packs';
import { attachWeights, TEXT_ENCODER_PREFIX } from '../../src/engine/pipelines';
import { Rng } from '../../src/engine/random';
import { EngineWorker, parseEngineDevice, type TensorData } from '../../src/engine/runtime';
import { createScheduler, type DdpmScheduler, resolveSchedulerConfig } from '../../src/engine/schedulers';
import { ClipTokenizer } from '../../src/engine/tokenizer';
import { fromFloat32, parseSafetensors, serializeSafetensors } from '../../src/engine/weights/safetensors';
import { profileModel } from '../../bench/gpu/profile';
import { type FeedSpec } from '../../bench/gpu/speed';
import { baseModelPreset } from './architecture';
import { loadStage, saveStage, type StageState } from './checkpoints';
import { captionOf, drawCaption, type EmojiDataset, IMAGE_SIZE, readEmojiDataset } from './emoji-records';
import { trainVocabulary } from './vocabulary';

const { values: OPTIONS } = parseArgs({
  options: {
    data: { type: 'string', default: '.base-model/emoji.gz' },
    /** Use only the first N images (a smoke run). */
    limit: { type: 'string' },
    run: { type: 'string', default: '.base-model/run' },
    export: { type: 'string' },
    'resume-from': { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    /** This invocation's time budget; each stage stops at it with a checkpoint. */
    minutes: { type: 'string', default: '60' },
    'vae-steps': { type: 'string', default: '3000' },
    'vae-batch': { type: 'string', default: '32' },
    'vae-lr': { type: 'string', default: '4e-4' },
    'unet-steps': { type: 'string', default: '30000' },
    batch: { type: 'string', default: '128' },
    lr: { type: 'string', default: '3e-4' },
    'warmup-steps': { type: 'string', default: '500' },
    'checkpoint-every': { type: 'string', default: '1000' },
    /** Write the pack (to `<run>/pack`) whether or not the UNet has run all its steps. */
    pack: { type: 'boolean', default: false },
    /** The UNet and text encoder weights the pack gets: the EMA, or the last step's (`params`). */
    'pack-weights': { type: 'string', default: 'ema' },
    tiny: { type: 'boolean', default: false },
    /** Profile this many runs of the text-to-image train step per operator (run with CUDA_LAUNCH_BLOCKING=1), then stop. */
    profile: { type: 'string' },
    seed: { type: 'string', default: '0' },
  },
});

const num = (key: keyof typeof OPTIONS) => Number(OPTIONS[key]);
const RUN = OPTIONS.run!;
const SEED = num('seed');
const DEADLINE = Date.now() + num('minutes') * 60_000;
/** A stage stops this long before the deadline, leaving time to save and export. */
const MARGIN_MS = 25_000;
const LATENT_SIZE = IMAGE_SIZE / 2;
const LATENT_CHANNELS = 4;
const EMA_DECAY = 0.9995;
/** The EMA moves every this many steps (by decay^k): reading the weights back costs a copy. */
const EMA_EVERY = 10;
const MIN_SNR_GAMMA = 5;

const log = (line: string) => console.log(`[train:base ${new Date().toISOString().slice(11, 19)}] ${line}`);

/** Per-step randomness from (seed, stage, step), so a resumed run draws what an uninterrupted one would. */
const stepRng = (stage: number, step: number) => new Rng(SEED * 2 ** 24 + stage * 2 ** 22 + step);

/** Warm-up, then cosine decay to a tenth of the peak over the planned steps. */
function learningRate(peak: number, step: number, total: number): number {
  const warmup = num('warmup-steps');
  if (step < warmup) return (peak * (step + 1)) / warmup;
  const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
  return peak * (0.1 + 0.45 * (1 + Math.cos(Math.PI * progress)));
}

interface Stage {
  name: 'vae' | 'unet';
  index: number;
  step: PretrainStep;
  shapes: ReadonlyMap<string, number[]>;
  initial: () => Map<string, Float32Array>;
  totalSteps: number;
  lr: number;
  ema: boolean;
  /** What the stage trains its weights to predict, where that can change between runs (the UNet's prediction type). */
  objective?: string;
  /** The feeds of step `n` (0-based). */
  batch: (n: number) => Promise<Record<string, TensorData>>;
}

/** Where a stage starts: its own full checkpoint, else an exported compact one, else fresh weights. */
async function startOf(stage: Stage): Promise<StageState | undefined> {
  const names = stage.step.trainable;
  const from = OPTIONS['resume-from'];
  return (await loadStage(join(RUN, `${stage.name}.safetensors`), names)) ?? (from ? loadStage(join(from, `${stage.name}.safetensors`), names) : undefined);
}

/**
 * Runs a stage until its planned steps or the deadline; returns its weights (the EMA where kept), whether it finished,
 * and what the weights were trained to predict.
 */
async function runStage(worker: EngineWorker, stage: Stage): Promise<{ weights: Map<string, Float32Array>; done: boolean; objective?: string }> {
  const names = stage.step.trainable;
  const start = await startOf(stage);
  const startedAt = start?.stepsDone ?? 0;
  let done = startedAt;
  // UNet states from before objectives were recorded were trained on epsilon. A state trained for another objective
  // continues with this stage's: its EMA restarts from the weights, and it keeps its old label until a step is done.
  const startObjective = stage.objective && (start ? (start.objective ?? 'epsilon') : stage.objective);
  const retargeted = startObjective !== stage.objective;
  const objective = () => (done > startedAt ? stage.objective : startObjective);
  const finalWeights = (params: (name: string) => Float32Array, ema?: Record<string, Float32Array>) =>
    new Map(names.map((name) => [name, ema && OPTIONS['pack-weights'] === 'ema' ? ema[name] : params(name)]));
  if (done >= stage.totalSteps && start && !retargeted) {
    return { weights: finalWeights((name) => start.checkpoint.params[name] as Float32Array, start.ema), done: true, objective: startObjective };
  }
  const trainer = await Trainer.create(worker, stage.step.compiled, start?.checkpoint ?? Object.fromEntries(stage.initial()));
  const ema = stage.ema ? ((!retargeted && start?.ema) || Object.fromEntries(names.map((name) => [name, Float32Array.from(trainer.param(name))]))) : undefined;
  if (retargeted) log(`${stage.name}: trained for ${startObjective}, continuing with ${stage.objective} (the EMA restarts)`);
  const parameters = names.reduce((n, name) => n + stage.shapes.get(name)!.reduce((a, b) => a * b, 1), 0);
  log(`${stage.name}: ${start ? `resuming at step ${done}` : 'starting'}, ${parameters} parameters`);
  const save = () => saveStage(join(RUN, `${stage.name}.safetensors`), 'full', { stepsDone: done, checkpoint: trainer.checkpoint(), ema, objective: objective() }, stage.shapes);
  let losses: number[] = [];
  let since = Date.now();
  let next: Promise<Record<string, TensorData>> | undefined;
  while (done < stage.totalSteps && DEADLINE - Date.now() > MARGIN_MS) {
    const lr = learningRate(stage.lr, done, stage.totalSteps);
    const running = trainer.step(await (next ?? stage.batch(done)), lr);
    next = stage.batch(done + 1); // drawn while the step runs
    const { loss, gradNorm } = await running;
    if (!Number.isFinite(loss)) throw new Error(`${stage.name}: loss ${loss} at step ${done}`);
    losses.push(loss);
    done++;
    if (ema && done % EMA_EVERY === 0) {
      // diffusers' EMAModel warm-up: (1 + step) / (10 + step) caps the decay, so early weights fade quickly.
      const decay = Math.min(EMA_DECAY, (1 + done) / (10 + done)) ** EMA_EVERY;
      for (const name of names) {
        const current = trainer.param(name);
        const average = ema[name];
        for (let i = 0; i < average.length; i++) average[i] = decay * average[i] + (1 - decay) * current[i];
      }
    }
    if (done % 50 === 0 || done === stage.totalSteps) {
      const mean = losses.reduce((a, b) => a + b, 0) / losses.length;
      const msPerStep = (Date.now() - since) / losses.length;
      log(`${stage.name} ${done}/${stage.totalSteps} loss ${mean.toFixed(5)} grad ${gradNorm.toFixed(3)} lr ${lr.toExponential(2)} ${msPerStep.toFixed(1)} ms/step`);
      await writeFile(join(RUN, 'log.jsonl'), `${JSON.stringify({ stage: stage.name, step: done, loss: mean, lr, msPerStep })}\n`, { flag: 'a' });
      losses = [];
      since = Date.now();
    }
    if (done % num('checkpoint-every') === 0) await save();
  }
  await next; // the batch drawn for a step the deadline left out
  await save();
  const weights = finalWeights((name) => Float32Array.from(trainer.param(name)), ema);
  await trainer.dispose();
  return { weights, done: done >= stage.totalSteps, objective: objective() };
}

// ---------- data ----------

/** HWC bytes of the given images as CHW floats in [-1, 1]. */
function imageBatch(data: EmojiDataset, indices: readonly number[]): Float32Array {
  const size = IMAGE_SIZE * IMAGE_SIZE;
  const out = new Float32Array(indices.length * 3 * size);
  indices.forEach((index, row) => {
    const pixels = data.images.subarray(index * 3 * size, (index + 1) * 3 * size);
    for (let p = 0; p < size; p++) for (let c = 0; c < 3; c++) out[(row * 3 + c) * size + p] = pixels[p * 3 + c] / 127.5 - 1;
  });
  return out;
}

const pick = (rng: Rng, pool: readonly number[], count: number) => Array.from({ length: count }, () => pool[Math.floor(rng.nextUniform() * pool.length)]);

async function vocabulary(data: EmojiDataset): Promise<ClipTokenizer> {
  const dir = join(RUN, 'tokenizer');
  const from = OPTIONS['resume-from'];
  if (!existsSync(join(dir, 'vocab.json')) && from && existsSync(join(from, 'tokenizer'))) await cp(join(from, 'tokenizer'), dir, { recursive: true });
  if (!existsSync(join(dir, 'vocab.json'))) {
    const captions = data.records.filter((r) => !r.heldOut).flatMap((r) => [captionOf(r, true), captionOf(r, false)]);
    const { files, reserved } = trainVocabulary(captions, SEED);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'vocab.json'), files.vocabJson);
    await writeFile(join(dir, 'merges.txt'), files.mergesTxt);
    await writeFile(join(dir, 'tokenizer_config.json'), files.tokenizerConfigJson);
    await writeFile(join(dir, 'reserved_identifiers.json'), `${JSON.stringify(reserved)}\n`);
  }
  const read = (file: string) => readFile(join(dir, file), 'utf8');
  const tokenizer = ClipTokenizer.fromFiles({ vocabJson: await read('vocab.json'), mergesTxt: await read('merges.txt'), tokenizerConfigJson: await read('tokenizer_config.json') });
  log(`vocabulary: ${tokenizer.vocabSize} tokens`);
  return tokenizer;
}

interface Posterior {
  mean: Float32Array;
  /** exp(logvar / 2), computed once: every step draws from it. */
  std: Float32Array;
  scalingFactor: number;
}

/** Every image's posterior under the trained VAE, and 1 / the standard deviation of latents drawn from it. */
async function encodeAll(worker: EngineWorker, config: VaeConfig, weights: ReadonlyMap<string, Float32Array>, data: EmojiDataset, heldIn: readonly number[]): Promise<Posterior> {
  const rows = 64;
  const g = new Graph('vae_encoder');
  const out = buildVaeEncoder(g, config, g.input('image', 'float32', [rows, 3, IMAGE_SIZE, IMAGE_SIZE]));
  g.output(out.mean, 'mean');
  g.output(out.logvar, 'logvar');
  attachWeights(g, weights);
  const session = await worker.createSession(serialize(g));
  const count = data.records.length;
  const length = LATENT_CHANNELS * LATENT_SIZE * LATENT_SIZE;
  const mean = new Float32Array(count * length);
  const logvar = new Float32Array(count * length);
  for (let first = 0; first < count; first += rows) {
    const indices = Array.from({ length: rows }, (_, i) => Math.min(first + i, count - 1));
    const result = await worker.run(session, { image: { dtype: 'float32', dims: [rows, 3, IMAGE_SIZE, IMAGE_SIZE], data: imageBatch(data, indices) } });
    const take = Math.min(rows, count - first) * length;
    mean.set((result.mean.data as Float32Array).subarray(0, take), first * length);
    logvar.set((result.logvar.data as Float32Array).subarray(0, take), first * length);
  }
  await worker.release(session);
  // E[z] and E[z^2] of z ~ N(mean, exp(logvar)) over the pretraining images.
  let sum = 0;
  let squares = 0;
  for (const index of heldIn) {
    for (let i = index * length; i < (index + 1) * length; i++) {
      sum += mean[i];
      squares += mean[i] * mean[i] + Math.exp(logvar[i]);
    }
  }
  const n = heldIn.length * length;
  return { mean, std: logvar.map((x) => Math.exp(0.5 * x)), scalingFactor: 1 / Math.sqrt(squares / n - (sum / n) ** 2) };
}

/** transformers 4's key naming (`text_model.…`), which keeps the text encoder's weights apart from the UNet's in one step. */
const textEncoderDeclared = (preset: PackPreset) => declaredTextEncoderWeights(parseClipTextConfig(preset.textEncoder), TEXT_ENCODER_PREFIX);

const float16File = (weights: ReadonlyMap<string, Float32Array>, declared: ReadonlyMap<string, readonly number[]>) =>
  serializeSafetensors(new Map([...declared].map(([name, shape]) => [name, fromFloat32(weights.get(name)!, [...shape], 'F16')])), { format: 'pt' });

async function writePack(preset: PackPreset, tokenizerDir: string, vae: ReadonlyMap<string, Float32Array>, model: ReadonlyMap<string, Float32Array>) {
  const declared = declaredPackWeights(preset);
  const read = (file: string) => readFile(join(tokenizerDir, file), 'utf8');
  const files = stableDiffusionPackFiles(
    preset,
    { vocabJson: await read('vocab.json'), mergesTxt: await read('merges.txt'), tokenizerConfigJson: await read('tokenizer_config.json') },
    { text_encoder: float16File(model, textEncoderDeclared(preset)), unet: float16File(model, declared.unet), vae: float16File(vae, declared.vae) },
  );
  const dir = join(RUN, 'pack');
  await writePackToFolder(files, dir);
  log(`pack written to ${dir}`);
}

async function main() {
  await mkdir(RUN, { recursive: true });
  const full = await readEmojiDataset(OPTIONS.data!);
  const limit = OPTIONS.limit ? Number(OPTIONS.limit) : full.records.length;
  const data = { records: full.records.slice(0, limit), images: full.images.subarray(0, limit * IMAGE_SIZE * IMAGE_SIZE * 3) };
  const heldIn = data.records.flatMap((r, i) => (r.heldOut ? [] : [i]));
  const tokenizer = await vocabulary(data);
  const tiny = OPTIONS.tiny!;
  const worker = new EngineWorker({ device: parseEngineDevice(OPTIONS.device!), onnxruntimeModule: process.env.GPUKIT_ORT });
  try {
    // The scaling factor is known once the VAE is trained; no shape depends on it.
    let preset = baseModelPreset({ vocabSize: tokenizer.vocabSize, scalingFactor: 1, tiny });
    const declared = declaredPackWeights(preset);
    const vaeConfig = parseVaeConfig(preset.vae);
    const vaeBatch = num('vae-batch');
    const vae = await runStage(worker, {
      name: 'vae', index: 0, totalSteps: num('vae-steps'), lr: num('vae-lr'), ema: false,
      step: vaeTrainStep(vaeConfig, { batchSize: vaeBatch, resolution: IMAGE_SIZE, klWeight: 1e-6 / 3 }, { maxGradNorm: 1, weightDecay: 0 }),
      shapes: new Map([...declared.vae].map(([name, shape]) => [name, [...shape]])),
      initial: () => initialWeights(declared.vae, new Rng(SEED + 1)),
      batch: async (n) => {
        const rng = stepRng(0, n);
        return {
          image: { dtype: 'float32', dims: [vaeBatch, 3, IMAGE_SIZE, IMAGE_SIZE], data: imageBatch(data, pick(rng, heldIn, vaeBatch)) },
          eps: { dtype: 'float32', dims: [vaeBatch, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE], data: rng.normalFloat32(vaeBatch * LATENT_CHANNELS * LATENT_SIZE * LATENT_SIZE) },
        };
      },
    });
    if (!vae.done) return;

    const latentsFile = join(RUN, 'latents.json');
    let posterior: Promise<Posterior> | undefined;
    const encoded = () => (posterior ??= encodeAll(worker, vaeConfig, vae.weights, data, heldIn));
    if (!existsSync(latentsFile)) {
      const from = OPTIONS['resume-from'] && join(OPTIONS['resume-from'], 'latents.json');
      if (from && existsSync(from)) await cp(from, latentsFile);
      else await writeFile(latentsFile, `${JSON.stringify({ scalingFactor: (await encoded()).scalingFactor })}\n`);
    }
    const { scalingFactor } = JSON.parse(await readFile(latentsFile, 'utf8')) as { scalingFactor: number };
    preset = baseModelPreset({ vocabSize: tokenizer.vocabSize, scalingFactor, tiny });
    log(`latents: scaling factor ${scalingFactor.toFixed(5)}`);

    const batch = num('batch');
    const textDeclared = textEncoderDeclared(preset);
    const scheduler = createScheduler('ddpm', preset.scheduler) as DdpmScheduler;
    const predictionType = resolveSchedulerConfig('ddpm', preset.scheduler).prediction_type;
    const snr = Array.from(scheduler.alphasCumprod, (a) => a / (1 - a));
    // Min-SNR-γ (Hang et al. 2023): min(SNR, γ) / SNR for epsilon targets, min(SNR, γ) / (SNR + 1) for v.
    const snrWeight = (t: number) => Math.min(snr[t], MIN_SNR_GAMMA) / (predictionType === 'v_prediction' ? snr[t] + 1 : snr[t]);
    const ids = new Map<string, number[]>();
    const length = LATENT_CHANNELS * LATENT_SIZE * LATENT_SIZE;
    const step = textToImageTrainStep(parseClipTextConfig(preset.textEncoder), parseUNetConfig(preset.unet), tokenizer.maxLength,
      { batchSize: batch, latentSize: LATENT_SIZE }, { maxGradNorm: 1, weightDecay: 1e-2 });
    if (OPTIONS.profile) return console.log(await profileStep(step));
    const model = await runStage(worker, {
      name: 'unet', index: 1, totalSteps: num('unet-steps'), lr: num('lr'), ema: true, objective: predictionType,
      step,
      shapes: new Map([...textDeclared, ...declared.unet].map(([name, shape]) => [name, [...shape]])),
      initial: () => new Map([...initialWeights(textDeclared, new Rng(SEED + 2)), ...initialWeights(declared.unet, new Rng(SEED + 3))]),
      batch: async (n) => {
        const { mean, std } = await encoded();
        const rng = stepRng(1, n);
        const indices = pick(rng, heldIn, batch);
        const tokens: number[] = [];
        const latents = new Float64Array(batch * length);
        indices.forEach((index, row) => {
          const caption = drawCaption(data.records[index], rng);
          tokens.push(...(ids.get(caption) ?? ids.set(caption, tokenizer.encodePadded(caption)).get(caption)!));
          // A fresh posterior sample every step, as diffusers' training scripts draw one.
          const eps = rng.normal(length);
          for (let i = 0, at = index * length; i < length; i++, at++) {
            latents[row * length + i] = (mean[at] + std[at] * eps[i]) * scalingFactor;
          }
        });
        const noise = rng.normal(batch * length);
        const timesteps = indices.map(() => Math.floor(rng.nextUniform() * snr.length));
        const dims = [batch, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE];
        return {
          input_ids: { dtype: 'int64', dims: [batch, tokenizer.maxLength], data: BigInt64Array.from(tokens, BigInt) },
          noisy_latents: { dtype: 'float32', dims, data: Float32Array.from(scheduler.addNoise(latents, noise, timesteps)) },
          target: { dtype: 'float32', dims, data: Float32Array.from(predictionType === 'v_prediction' ? scheduler.getVelocity(latents, noise, timesteps) : noise) },
          timesteps: { dtype: 'int64', dims: [batch], data: BigInt64Array.from(timesteps, BigInt) },
          row_weights: { dtype: 'float32', dims: [batch], data: Float32Array.from(timesteps, snrWeight) },
        };
      },
    });
    if (model.done || OPTIONS.pack) {
      if (model.objective !== predictionType) throw new Error(`the UNet was trained for ${model.objective}: train steps of ${predictionType} before packing it`);
      await writePack(preset, join(RUN, 'tokenizer'), vae.weights, model.weights);
    }
  } finally {
    await worker.close();
    await exportState();
  }
}

/** onnxruntime's per-operator profile of a train step on random feeds (bench/gpu's profiler). */
async function profileStep({ compiled }: PretrainStep): Promise<string> {
  if (!('model' in compiled)) throw new Error('profiling needs an in-memory step');
  const path = join(RUN, 'profiled-step.onnx');
  await writeFile(path, compiled.model);
  const { size } = new FlatLayout(compiled.params);
  const spec: FeedSpec = [
    ...['params', 'm', 'v'].map((name) => ({ name, dtype: 'float32' as const, dims: [size] })),
    ...compiled.batch.map(({ name, dtype, shape }) => ({ name, dtype: dtype as 'float32' | 'int64', dims: shape })),
    { name: 'step', dtype: 'int64', dims: [] },
    { name: 'lr', dtype: 'float32', dims: [] },
  ];
  return profileModel(process.env.GPUKIT_ORT ?? 'onnxruntime-node', OPTIONS.device!, path, spec, Number(OPTIONS.profile));
}

/** Compact copies of the stages, the tokenizer, the scaling factor and the log into `--export`. */
async function exportState(): Promise<void> {
  const to = OPTIONS.export;
  if (!to) return;
  await mkdir(to, { recursive: true });
  // At most 8 files of 16 MiB come back from a GPU call: the tokenizer is rebuilt from the data and seed.
  for (const file of ['log.jsonl', 'latents.json']) {
    if (existsSync(join(RUN, file))) await cp(join(RUN, file), join(to, file), { recursive: true });
  }
  for (const name of ['vae', 'unet']) {
    const path = join(RUN, `${name}.safetensors`);
    if (!existsSync(path)) continue;
    const names = [...parseSafetensors(new Uint8Array(await readFile(path))).keys()]
      .filter((key) => key.startsWith('param.')).map((key) => key.slice('param.'.length));
    const state = (await loadStage(path, names))!;
    const shapes = new Map(names.map((name) => [name, [state.checkpoint.params[name].length]]));
    await saveStage(join(to, `${name}.safetensors`), 'compact', state, shapes);
  }
  log(`exported to ${to}`);
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
