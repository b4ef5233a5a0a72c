import { Graph, sizeOf } from '../graph';
import { buildClipTextEncoder, type ClipTextConfig, clipTextKeyPrefix, dropClipTextBuffers, parseClipTextConfig } from '../models/clip-text';
import { declaredTextEncoderWeights, declaredUNetWeights, declaredVaeWeights } from '../models/declared-weights';
import { FLOAT32, type Precision } from '../models/precision';
import { parseUNetConfig, type UNetConfig } from '../models/unet';
import { parseVaeConfig, renameLegacyVaeKeys, type VaeConfig } from '../models/vae';
import { type SchedulerName } from '../schedulers';
import { type ClipTokenizer, loadClipTokenizerFrom } from '../tokenizer';
import { bindWeights, WeightBindingError, weightProblems } from '../weights/bind';
import { loadPack, readWeightHeaders, type Pack, type PackSource, type RangedPackSource } from '../weights/pack';
import { float32ArrayToFloat16 } from '../weights/dtype';
import { fromFloat32, parseSafetensors, serializeSafetensors } from '../weights/safetensors';

/** A Stable Diffusion pack with configs parsed and every component's weights checked and widened to float32. */
export interface StableDiffusionModels {
  tokenizer: ClipTokenizer;
  textEncoder: { config: ClipTextConfig; keyPrefix: string; weights: Map<string, Float32Array> };
  /** `sampleSize`: the latent size the UNet was trained at, which sets the default image size. */
  unet: { config: UNetConfig; sampleSize: number; weights: Map<string, Float32Array> };
  vae: { config: VaeConfig; weights: Map<string, Float32Array> };
  /** The pack's `scheduler_config.json`, and its scheduler as one of ours when we have it. */
  scheduler: { config: Record<string, unknown>; name: SchedulerName | undefined };
}

/** diffusers scheduler classes by the name our schedulers go by. */
const SCHEDULER_CLASSES: Record<string, SchedulerName> = {
  DDIMScheduler: 'ddim',
  PNDMScheduler: 'pndm',
  EulerDiscreteScheduler: 'euler',
  EulerAncestralDiscreteScheduler: 'euler_ancestral',
  DPMSolverMultistepScheduler: 'dpmpp_2m',
  LMSDiscreteScheduler: 'lms',
  DDPMScheduler: 'ddpm',
};

async function loadTextEncoder(pack: Pack): Promise<StableDiffusionModels['textEncoder']> {
  const component = pack.component('text_encoder');
  const config = parseClipTextConfig(component.config);
  const stored = dropClipTextBuffers(await component.weights());
  const keyPrefix = clipTextKeyPrefix(stored.keys());
  const weights = bindWeights(declaredTextEncoderWeights(config, keyPrefix), stored);
  return { config, keyPrefix, weights };
}

async function loadUNet(pack: Pack): Promise<StableDiffusionModels['unet']> {
  const component = pack.component('unet');
  const config = parseUNetConfig(component.config);
  const weights = bindWeights(declaredUNetWeights(config), await component.weights());
  return { config, sampleSize: unetSampleSize(component.config), weights };
}

/** diffusers' UNet2DConditionModel default, for configs that leave `sample_size` out. */
const unetSampleSize = (config: Record<string, unknown>) => Number(config.sample_size ?? 64);

async function loadVae(pack: Pack): Promise<StableDiffusionModels['vae']> {
  const component = pack.component('vae');
  const config = parseVaeConfig(component.config);
  const weights = bindWeights(declaredVaeWeights(config), renameLegacyVaeKeys(await component.weights()));
  return { config, weights };
}

/**
 * Reads a pack's configs and weights, as diffusers loads them (older files' names and buffers included),
 * one component at a time so only one checkpoint's raw bytes are held at once. A missing, unexpected or
 * mis-shaped tensor is a WeightBindingError naming it; a config the engine cannot build is a ModelConfigError.
 * The tokenizer comes from the pack's `tokenizer` folder, through the same source, unless one is given.
 */
export async function loadStableDiffusion(pack: Pack, tokenizer?: ClipTokenizer): Promise<StableDiffusionModels> {
  const scheduler = pack.component('scheduler');
  return {
    tokenizer: tokenizer ?? await loadClipTokenizerFrom(pack.source, pack.component('tokenizer').name),
    textEncoder: await loadTextEncoder(pack),
    unet: await loadUNet(pack),
    vae: await loadVae(pack),
    scheduler: { config: scheduler.config, name: packScheduler(pack) },
  };
}

/** A whole model from wherever its pack lives (a folder, object storage): `loadPack` then `loadStableDiffusion`. */
export async function loadStableDiffusionFrom(source: PackSource): Promise<StableDiffusionModels> {
  return loadStableDiffusion(await loadPack(source));
}

/**
 * Image sizes in pixels as a model's configs fix them: `vaeFactor` pixels a side make one latent, every
 * side must be a multiple of `sideMultiple` (the UNet halves the latents at each level but the last),
 * and `nativeSize`, the UNet's sample size in pixels, is what images are made and trained at by default.
 */
export interface ImageGeometry {
  vaeFactor: number;
  sideMultiple: number;
  nativeSize: number;
}

export function imageGeometry({ unet, vae }: {
  unet: Pick<StableDiffusionModels['unet'], 'config' | 'sampleSize'>;
  vae: Pick<StableDiffusionModels['vae'], 'config'>;
}): ImageGeometry {
  const vaeFactor = 2 ** (vae.config.block_out_channels.length - 1);
  const unetFactor = 2 ** (unet.config.blockOutChannels.length - 1);
  return { vaeFactor, sideMultiple: vaeFactor * unetFactor, nativeSize: unet.sampleSize * vaeFactor };
}

/** The pack's scheduler as one of ours, when we have it. */
export function packScheduler(pack: Pack): SchedulerName | undefined {
  return SCHEDULER_CLASSES[pack.component('scheduler').className];
}

/** A pack's image geometry from its configs alone, reading no weights. */
export function packImageGeometry(pack: Pack): ImageGeometry {
  const unet = pack.component('unet').config;
  return imageGeometry({
    unet: { config: parseUNetConfig(unet), sampleSize: unetSampleSize(unet) },
    vae: { config: parseVaeConfig(pack.component('vae').config) },
  });
}

/**
 * Checks a pack as `loadStableDiffusion` would load it (configs, tokenizer, every weight's name, shape
 * and type) from the safetensors headers alone, so a service can refuse a broken upload without holding
 * a checkpoint's data. Throws what loading would: PackError, ModelConfigError, TokenizerError or a
 * WeightBindingError listing every problem.
 */
export async function checkStableDiffusionPack(pack: Pack, source: RangedPackSource): Promise<void> {
  await loadClipTokenizerFrom(pack.source, pack.component('tokenizer').name);
  const textEncoder = pack.component('text_encoder');
  const storedText = dropClipTextBuffers(await readWeightHeaders(source, textEncoder));
  const unet = pack.component('unet');
  const vae = pack.component('vae');
  const problems = [
    ...weightProblems(declaredTextEncoderWeights(parseClipTextConfig(textEncoder.config), clipTextKeyPrefix(storedText.keys())), storedText),
    ...weightProblems(declaredUNetWeights(parseUNetConfig(unet.config)), await readWeightHeaders(source, unet)),
    ...weightProblems(declaredVaeWeights(parseVaeConfig(vae.config)), renameLegacyVaeKeys(await readWeightHeaders(source, vae))),
  ];
  if (problems.length > 0) throw new WeightBindingError(problems);
}

/**
 * The same models with a fully fine-tuned UNet (every parameter, by checkpoint key, as `trainDreamBooth`
 * returns it) in place of the pack's; a missing, extra or mis-shaped tensor is a WeightBindingError.
 */
export function withUNetWeights(models: StableDiffusionModels, weights: ReadonlyMap<string, Float32Array>): StableDiffusionModels {
  const expected = declaredUNetWeights(models.unet.config);
  const problems: string[] = [];
  for (const [name, shape] of expected) {
    const data = weights.get(name);
    const size = sizeOf(shape);
    if (!data) problems.push(`missing ${name}`);
    else if (data.length !== size) problems.push(`${name} holds ${data.length} values but the model expects [${shape}]`);
  }
  for (const name of weights.keys()) if (!expected.has(name)) problems.push(`unexpected ${name}`);
  if (problems.length > 0) throw new WeightBindingError(problems);
  return { ...models, unet: { ...models.unet, weights: new Map(weights) } };
}

/** A UNet's weights (a full fine-tune) as the `unet/diffusion_pytorch_model.safetensors` of a diffusers pack. */
export function serializeUNet(models: StableDiffusionModels, weights: ReadonlyMap<string, Float32Array>): Uint8Array {
  const shapes = declaredUNetWeights(models.unet.config);
  return serializeSafetensors(new Map([...withUNetWeights(models, weights).unet.weights].map(([name, data]) => [name, fromFloat32(data, [...shapes.get(name)!])])));
}

/** UNet weights from a safetensors file (F32, F16 or BF16) checked against the model, as `withUNetWeights` takes them. */
export function parseUNetWeights(models: StableDiffusionModels, bytes: Uint8Array): Map<string, Float32Array> {
  return bindWeights(declaredUNetWeights(models.unet.config), parseSafetensors(bytes));
}

/**
 * Gives each weight a graph declares the data loaded for it, but for those fed at run time (`fed`), rounded to
 * float16 where the graph declares the weight float16 (a float16 model).
 */
export function attachWeights(g: Graph, weights: ReadonlyMap<string, Float32Array>, fed: ReadonlySet<string> = new Set()): void {
  for (const [name, weight] of g.weights) {
    if (fed.has(name)) continue;
    const data = weights.get(name);
    if (!data) throw new Error(`no loaded weight for ${name}`);
    weight.data = weight.tensor.dtype === 'float16' ? float32ArrayToFloat16(data) : data;
  }
}

/** The frozen text encoder on input_ids [batch, sequence], weights attached; output `last_hidden_state`. */
export function textEncoderGraph(
  models: Pick<StableDiffusionModels, 'textEncoder'>, batch: number, sequence: number, precision: Precision = FLOAT32,
): Graph {
  const { config, keyPrefix, weights } = models.textEncoder;
  const g = new Graph('text_encoder');
  const { lastHiddenState } = buildClipTextEncoder(g, config, g.input('input_ids', 'int64', [batch, sequence]), { prefix: keyPrefix, precision });
  g.output(lastHiddenState, 'last_hidden_state');
  attachWeights(g, weights);
  return g;
}
