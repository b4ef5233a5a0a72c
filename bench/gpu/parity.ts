import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildGradientGraph, compile, compileTrainStep, FlatLayout } from '../../src/engine/autodiff';
import { add, chunk, Graph, mul, reduceMean, serialize, sub, type Tensor } from '../../src/engine/graph';
import { buildClipTextEncoder, clipTextKeyPrefix, parseClipTextConfig } from '../../src/engine/models/clip-text';
import { LoraSlots, parseUNetLora } from '../../src/engine/models/lora';
import { FLOAT32, type Precision } from '../../src/engine/models/precision';
import { buildUNet, parseUNetConfig } from '../../src/engine/models/unet';
import { buildVaeDecoder, buildVaeEncoder, parseVaeConfig } from '../../src/engine/models/vae';
import { attachWeights, loadStableDiffusion, Txt2ImgPipeline } from '../../src/engine/pipelines';
import { type EngineWorker, type TensorData } from '../../src/engine/runtime';
import { createScheduler } from '../../src/engine/schedulers';
import { loadClipTokenizer } from '../../src/engine/tokenizer';
import { FolderPackSource, loadPack } from '../../src/engine/weights/pack';
import { readSafetensors, toFloat32, toIntegers } from '../../src/engine/weights/safetensors';
import { relativeL2 } from '../../test/helpers/relative-l2';
import { bindFrom, type Reference } from './reference';

/** One comparison against the float64 reference: `error` must stay under `bound`. */
export interface Check {
  name: string;
  error: number;
  bound: number;
  /** `rel L2`, or `abs` for the LoRA parameters after the AdamW step. */
  measure: 'rel L2' | 'abs';
}

const f32 = (data: Float32Array, dims: readonly number[]): TensorData => ({ dtype: 'float32', dims: [...dims], data: data.slice() });
const i64 = (values: number[], dims: readonly number[]): TensorData => ({ dtype: 'int64', dims: [...dims], data: BigInt64Array.from(values, BigInt) });
const stored = (ref: Reference, name: string) => ref.tensors.get(name)!;
const storedF32 = (ref: Reference, name: string) => f32(toFloat32(stored(ref, name)), stored(ref, name).shape);

/** Runs a model once on the worker's device and releases the session. */
async function runOnce(worker: EngineWorker, model: Uint8Array, feeds: Record<string, TensorData>) {
  const session = await worker.createSession(model);
  try {
    return await worker.run(session, feeds);
  } finally {
    await worker.release(session);
  }
}

const output = (outputs: Record<string, TensorData>, name: string) => outputs[name].data as Float32Array;

/**
 * Every fixture the CPU tests check, run on `worker`'s device with the same tolerances: text encoder, UNet,
 * LoRA UNet, VAE encode/decode, the 10-step pipelines, the DreamBooth loss, gradients and one AdamW step.
 */
export async function parityChecks(worker: EngineWorker, ref: Reference, log: (line: string) => void): Promise<Check[]> {
  const checks: Check[] = [];
  const record = (check: Check) => {
    checks.push(check);
    log(`${check.name.padEnd(34)} ${check.measure} ${check.error.toExponential(2)} (bound ${check.bound.toExponential(0)}) ${check.error < check.bound ? 'ok' : 'FAIL'}`);
  };
  const pack = join(ref.dir, 'pack');
  const config = (component: string) => JSON.parse(readFileSync(join(pack, component, 'config.json'), 'utf8'));

  // CLIP text encoder
  {
    const weights = await readSafetensors(join(pack, 'text_encoder', 'model.safetensors'));
    const ids = stored(ref, 'text_encoder.input_ids');
    const g = new Graph('clip_text');
    const { lastHiddenState } = buildClipTextEncoder(g, parseClipTextConfig(config('text_encoder')),
      g.input('input_ids', 'int64', ids.shape), { prefix: clipTextKeyPrefix(weights.keys()) });
    g.output(lastHiddenState, 'last_hidden_state');
    bindFrom(g, weights);
    const out = await runOnce(worker, serialize(g), { input_ids: i64(toIntegers(ids), ids.shape) });
    record({ name: 'text encoder last_hidden_state', measure: 'rel L2', bound: 1e-4,
      error: relativeL2(output(out, 'last_hidden_state'), toFloat32(stored(ref, 'text_encoder.last_hidden_state'))) });
  }

  // UNet, plain and with the LoRA of lora_before.safetensors
  const unetWeights = await readSafetensors(join(pack, 'unet', 'diffusion_pytorch_model.safetensors'));
  const unetConfig = parseUNetConfig(config('unet'));
  const unetFeeds = () => ({
    sample: storedF32(ref, 'unet.sample'),
    timesteps: i64(toIntegers(stored(ref, 'unet.timesteps')), stored(ref, 'unet.timesteps').shape),
    encoder_hidden_states: storedF32(ref, 'unet.encoder_hidden_states'),
  });
  const unetGraph = (slots?: (g: Graph) => LoraSlots) => {
    const g = new Graph('unet');
    const lora = slots?.(g);
    const sample = stored(ref, 'unet.sample').shape;
    g.output(buildUNet(g, unetConfig, g.input('sample', 'float32', sample), g.input('timesteps', 'int64', [sample[0]]),
      g.input('encoder_hidden_states', 'float32', stored(ref, 'unet.encoder_hidden_states').shape), lora ? { linear: lora.linear } : {}), 'out');
    return { g, lora };
  };
  {
    const { g } = unetGraph();
    bindFrom(g, unetWeights);
    const out = await runOnce(worker, serialize(g), unetFeeds());
    record({ name: 'UNet out', measure: 'rel L2', bound: 1e-4, error: relativeL2(output(out, 'out'), toFloat32(stored(ref, 'unet.out'))) });
  }
  {
    const { g, lora } = unetGraph((graph) => new LoraSlots(graph, 4));
    const slots = lora!;
    bindFrom(g, unetWeights, slots.names());
    const before = parseUNetLora(await readSafetensors(join(ref.dir, 'lora_before.safetensors')));
    const out = await runOnce(worker, serialize(g, { weightsAsInputs: slots.names() }), { ...unetFeeds(), ...slots.feeds(before, 1) });
    record({ name: 'LoRA UNet out', measure: 'rel L2', bound: 1e-4, error: relativeL2(output(out, 'out'), toFloat32(stored(ref, 'lora.unet.out'))) });
  }

  // VAE encode and decode
  {
    const weights = await readSafetensors(join(pack, 'vae', 'diffusion_pytorch_model.safetensors'));
    const vaeConfig = parseVaeConfig(config('vae'));
    const image = stored(ref, 'vae.image');
    const encoder = new Graph('vae_encoder');
    const { mean, logvar } = buildVaeEncoder(encoder, vaeConfig, encoder.input('image', 'float32', image.shape));
    encoder.output(mean, 'mean');
    encoder.output(logvar, 'logvar');
    bindFrom(encoder, weights);
    const encoded = await runOnce(worker, serialize(encoder), { image: storedF32(ref, 'vae.image') });
    record({ name: 'VAE encode mean', measure: 'rel L2', bound: 1e-4, error: relativeL2(output(encoded, 'mean'), toFloat32(stored(ref, 'vae.posterior_mean'))) });
    record({ name: 'VAE encode logvar', measure: 'rel L2', bound: 1e-4, error: relativeL2(output(encoded, 'logvar'), toFloat32(stored(ref, 'vae.posterior_logvar'))) });
    const decoder = new Graph('vae_decoder');
    decoder.output(buildVaeDecoder(decoder, vaeConfig, decoder.input('latents', 'float32', stored(ref, 'vae.latents').shape)), 'decoded');
    bindFrom(decoder, weights);
    const decoded = await runOnce(worker, serialize(decoder), { latents: storedF32(ref, 'vae.latents') });
    record({ name: 'VAE decode', measure: 'rel L2', bound: 1e-4, error: relativeL2(output(decoded, 'decoded'), toFloat32(stored(ref, 'vae.decoded'))) });
  }

  // The 10-step txt2img pipelines, as test/engine/txt2img.test.ts runs them
  {
    const models = await loadStableDiffusion(await loadPack(new FolderPackSource(pack)), await loadClipTokenizer(join(pack, 'tokenizer')));
    const pipeline = new Txt2ImgPipeline(models, worker, { precision: FLOAT32 });
    try {
      for (const settings of ref.json.pipeline as { scheduler: 'pndm' | 'ddim' | 'euler' | 'dpmpp_2m'; prompt: string; negative_prompt: string; guidance_scale: number; num_inference_steps: number }[]) {
        const expected = stored(ref, `pipeline.${settings.scheduler}.image`);
        const result = await pipeline.generate({
          prompt: settings.prompt, negativePrompt: settings.negative_prompt, guidanceScale: settings.guidance_scale,
          steps: settings.num_inference_steps, scheduler: settings.scheduler, schedulerConfig: ref.json.schedulers[settings.scheduler].config,
          latents: toFloat32(stored(ref, `pipeline.${settings.scheduler}.latents`)), width: expected.shape[2], height: expected.shape[1],
        });
        record({ name: `pipeline ${settings.scheduler} 10 steps`, measure: 'rel L2', bound: 1e-3, error: relativeL2(result.images, toFloat32(expected)) });
      }
    } finally {
      await pipeline.close();
    }
  }

  // DreamBooth with prior preservation: loss, every gradient, the LoRA after one AdamW step
  const train = ref.json.train_lora;
  const json = (path: string) => JSON.parse(readFileSync(join(pack, path), 'utf8'));
  const latents = Float64Array.from(toFloat32(stored(ref, 'train.latents')));
  const noise = toFloat32(stored(ref, 'train.noise'));
  const timesteps = toIntegers(stored(ref, 'train.timesteps'));
  const noisy = Float32Array.from(createScheduler('ddpm', json('scheduler/scheduler_config.json')).addNoise(latents, Float64Array.from(noise), timesteps));
  const shape = stored(ref, 'train.latents').shape;
  const batch = () => ({
    noisy_latents: f32(noisy, shape),
    noise: f32(noise, shape),
    timesteps: i64(timesteps, [timesteps.length]),
    encoder_hidden_states: storedF32(ref, 'train.encoder_hidden_states'),
  });
  const dreambooth = (withLora: boolean) => {
    const g = new Graph('dreambooth');
    const slots = withLora ? new LoraSlots(g, train.rank, train.targets) : undefined;
    const noisyInput = g.input('noisy_latents', 'float32', shape);
    const noiseInput = g.input('noise', 'float32', shape);
    const pred = buildUNet(g, unetConfig, noisyInput, g.input('timesteps', 'int64', [shape[0]]),
      g.input('encoder_hidden_states', 'float32', stored(ref, 'train.encoder_hidden_states').shape), slots ? { linear: slots.linear } : {});
    const mse = (a: Tensor, b: Tensor) => reduceMean(mul(sub(a, b), sub(a, b)), [0, 1, 2, 3], false);
    const [predInstance, predPrior] = chunk(pred, 2, 0);
    const [noiseInstance, noisePrior] = chunk(noiseInput, 2, 0);
    const loss = add(mse(predInstance, noiseInstance), mul(mse(predPrior, noisePrior), ref.json.train_full.prior_loss_weight));
    return { g, loss, slots };
  };
  const worst = (names: string[], out: Record<string, TensorData>, reference: (name: string) => string) =>
    Math.max(...names.map((name) => relativeL2(output(out, `grad.${name}`), toFloat32(stored(ref, reference(name))))));
  {
    const { g, loss } = dreambooth(false);
    bindFrom(g, unetWeights);
    const wrt = [...unetWeights.keys()];
    const out = await runOnce(worker, compile(buildGradientGraph({ graph: g, loss, wrt, wrtAsInputs: false })).model, batch());
    const expectedLoss = ref.json.train_full.loss;
    record({ name: 'DreamBooth loss', measure: 'rel L2', bound: 1e-4, error: Math.abs(output(out, 'loss')[0] - expectedLoss) / expectedLoss });
    record({ name: `grad_full.* (worst of ${wrt.length})`, measure: 'rel L2', bound: 1e-4, error: worst(wrt, out, (name) => `grad_full.${name}`) });
  }
  const before = parseUNetLora(await readSafetensors(join(ref.dir, 'lora_before.safetensors')));
  const loraGraph = () => {
    const built = dreambooth(true);
    const slots = built.slots!;
    const initial = slots.values(before);
    bindFrom(built.g, unetWeights, slots.names());
    for (const [name, data] of initial) built.g.weights.get(name)!.data = data;
    return { ...built, initial, trainable: [...initial.keys()] };
  };
  const scale = () => ({ lora_scale: { dtype: 'float32', dims: [], data: Float32Array.of(train.alpha / train.rank) } as TensorData });
  {
    const { g, loss, trainable } = loraGraph();
    const out = await runOnce(worker, compile(buildGradientGraph({ graph: g, loss, wrt: trainable, wrtAsInputs: false })).model, { ...batch(), ...scale() });
    record({ name: 'DreamBooth LoRA loss', measure: 'rel L2', bound: 1e-4, error: Math.abs(output(out, 'loss')[0] - train.loss) / train.loss });
    record({ name: `grad_lora.* (worst of ${trainable.length})`, measure: 'rel L2', bound: 1e-4,
      error: worst(trainable, out, (name) => `grad_lora.${name.replace(/\.lora_([AB])\.weight$/, '.lora_$1.default.weight')}`) });
  }
  {
    const { g, loss, trainable, initial } = loraGraph();
    const { optimizer } = train;
    const compiled = compileTrainStep({ graph: g, loss, trainable, optimizer: { betas: optimizer.betas, eps: optimizer.eps, weightDecay: optimizer.weight_decay } });
    const feeds: Record<string, TensorData> = {
      ...batch(), ...scale(),
      step: { dtype: 'int64', dims: [], data: BigInt64Array.of(1n) },
      lr: { dtype: 'float32', dims: [], data: Float32Array.of(optimizer.lr) },
    };
    const layout = new FlatLayout(compiled.params);
    feeds.params = f32(layout.pack(Object.fromEntries(initial)) as Float32Array, [layout.size]);
    feeds.m = f32(new Float32Array(layout.size), [layout.size]);
    feeds.v = f32(new Float32Array(layout.size), [layout.size]);
    const updated = layout.unpack(output(await runOnce(worker, compiled.model, feeds), 'new_params'));
    const after = parseUNetLora(await readSafetensors(join(ref.dir, 'lora_after_1step.safetensors')));
    let error = 0;
    for (const [module, layer] of after) {
      for (const [slot, expected] of [['lora_A', layer.down], ['lora_B', layer.up]] as const) {
        const actual = updated[`${module}.${slot}.weight`];
        expected.forEach((value, i) => (error = Math.max(error, Math.abs(actual[i] - value))));
      }
    }
    record({ name: 'LoRA after one AdamW step', measure: 'abs', bound: 1e-5, error });
  }
  return checks;
}


/** How far a float16 model lands from the float64 reference: measured and reported, with no bound to meet. */
export interface Measured {
  name: string;
  error: number;
}

type PipelineSettings = { scheduler: 'pndm' | 'ddim' | 'euler' | 'dpmpp_2m'; prompt: string; negative_prompt: string; guidance_scale: number; num_inference_steps: number };

/**
 * The fixture's text encoder, UNet, VAE decode and 10-step pipelines computed at `precision` (float16 on CUDA),
 * each as its relative L2 distance from the float64 reference.
 */
export async function precisionErrors(worker: EngineWorker, ref: Reference, precision: Precision, log: (line: string) => void): Promise<Measured[]> {
  const measured: Measured[] = [];
  const record = (name: string, error: number) => {
    measured.push({ name, error });
    log(`${precision.dtype} ${name.padEnd(30)} rel L2 ${error.toExponential(2)}`);
  };
  const pack = join(ref.dir, 'pack');
  const config = (component: string) => JSON.parse(readFileSync(join(pack, component, 'config.json'), 'utf8'));
  const models = await loadStableDiffusion(await loadPack(new FolderPackSource(pack)), await loadClipTokenizer(join(pack, 'tokenizer')));
  {
    const ids = stored(ref, 'text_encoder.input_ids');
    const g = new Graph('clip_text');
    const { lastHiddenState } = buildClipTextEncoder(g, parseClipTextConfig(config('text_encoder')), g.input('input_ids', 'int64', ids.shape),
      { prefix: models.textEncoder.keyPrefix, precision });
    g.output(lastHiddenState, 'last_hidden_state');
    attachWeights(g, models.textEncoder.weights);
    const out = await runOnce(worker, serialize(g), { input_ids: i64(toIntegers(ids), ids.shape) });
    record('text encoder', relativeL2(output(out, 'last_hidden_state'), toFloat32(stored(ref, 'text_encoder.last_hidden_state'))));
  }
  {
    const sample = stored(ref, 'unet.sample').shape;
    const g = new Graph('unet');
    g.output(buildUNet(g, models.unet.config, g.input('sample', 'float32', sample), g.input('timesteps', 'int64', [sample[0]]),
      g.input('encoder_hidden_states', 'float32', stored(ref, 'unet.encoder_hidden_states').shape), { precision }), 'out');
    attachWeights(g, models.unet.weights);
    const out = await runOnce(worker, serialize(g), {
      sample: storedF32(ref, 'unet.sample'),
      timesteps: i64(toIntegers(stored(ref, 'unet.timesteps')), stored(ref, 'unet.timesteps').shape),
      encoder_hidden_states: storedF32(ref, 'unet.encoder_hidden_states'),
    });
    record('UNet out', relativeL2(output(out, 'out'), toFloat32(stored(ref, 'unet.out'))));
  }
  {
    const g = new Graph('vae_decoder');
    g.output(buildVaeDecoder(g, models.vae.config, g.input('latents', 'float32', stored(ref, 'vae.latents').shape), { precision }), 'decoded');
    attachWeights(g, models.vae.weights);
    const out = await runOnce(worker, serialize(g), { latents: storedF32(ref, 'vae.latents') });
    record('VAE decode', relativeL2(output(out, 'decoded'), toFloat32(stored(ref, 'vae.decoded'))));
  }
  const pipeline = new Txt2ImgPipeline(models, worker, { precision });
  try {
    for (const settings of ref.json.pipeline as PipelineSettings[]) {
      const expected = stored(ref, `pipeline.${settings.scheduler}.image`);
      const result = await pipeline.generate({
        prompt: settings.prompt, negativePrompt: settings.negative_prompt, guidanceScale: settings.guidance_scale,
        steps: settings.num_inference_steps, scheduler: settings.scheduler, schedulerConfig: ref.json.schedulers[settings.scheduler].config,
        latents: toFloat32(stored(ref, `pipeline.${settings.scheduler}.latents`)), width: expected.shape[2], height: expected.shape[1],
      });
      record(`pipeline ${settings.scheduler} 10 steps`, relativeL2(result.images, toFloat32(expected)));
    }
  } finally {
    await pipeline.close();
  }
  return measured;
}
