import { Graph } from '../graph';
import { buildClipTextEncoder, type ClipTextConfig, clipTextKeyPrefix, dropClipTextBuffers, parseClipTextConfig } from '../models/clip-text';
import { expectedWeights } from '../models/params';
import { buildUNet, parseUNetConfig, type UNetConfig } from '../models/unet';
import { buildVaeDecoder, buildVaeEncoder, parseVaeConfig, renameLegacyVaeKeys, type VaeConfig } from '../models/vae';
import { type SchedulerName } from '../schedulers';
import { type ClipTokenizer } from '../tokenizer';
import { bindWeights } from '../weights/bind';
import { type Pack } from '../weights/pack';

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

/** Every weight a graph declares, for the shapes these nominal inputs give (weights do not depend on them). */
function declaredWeights(build: (g: Graph) => void): Map<string, readonly number[]> {
  const g = new Graph('declared');
  build(g);
  return expectedWeights(g);
}

async function loadTextEncoder(pack: Pack): Promise<StableDiffusionModels['textEncoder']> {
  const component = pack.component('text_encoder');
  const config = parseClipTextConfig(component.config);
  const stored = dropClipTextBuffers(await component.weights());
  const keyPrefix = clipTextKeyPrefix(stored.keys());
  const weights = bindWeights(declaredWeights((g) =>
    buildClipTextEncoder(g, config, g.input('input_ids', 'int64', [1, 1]), { prefix: keyPrefix })), stored);
  return { config, keyPrefix, weights };
}

async function loadUNet(pack: Pack): Promise<StableDiffusionModels['unet']> {
  const component = pack.component('unet');
  const config = parseUNetConfig(component.config);
  const size = 2 ** config.blockOutChannels.length;
  const weights = bindWeights(declaredWeights((g) => buildUNet(
    g, config,
    g.input('sample', 'float32', [1, config.raw.in_channels, size, size]),
    g.input('timestep', 'float32', [1]),
    g.input('encoder_hidden_states', 'float32', [1, 1, config.crossAttentionDim[0]]),
  )), await component.weights());
  return { config, sampleSize: Number(component.config.sample_size ?? 64), weights };
}

async function loadVae(pack: Pack): Promise<StableDiffusionModels['vae']> {
  const component = pack.component('vae');
  const config = parseVaeConfig(component.config);
  const weights = bindWeights(declaredWeights((g) => {
    const size = 8 * 2 ** (config.block_out_channels.length - 1);
    buildVaeEncoder(g, config, g.input('image', 'float32', [1, config.in_channels, size, size]));
    buildVaeDecoder(g, config, g.input('latents', 'float32', [1, config.latent_channels, 1, 1]));
  }), renameLegacyVaeKeys(await component.weights()));
  return { config, weights };
}

/**
 * Reads a pack's configs and weights, as diffusers loads them (older files' names and buffers included),
 * one component at a time so only one checkpoint's raw bytes are held at once. A missing, unexpected or
 * mis-shaped tensor is a WeightBindingError naming it; a config the engine cannot build is a ModelConfigError.
 */
export async function loadStableDiffusion(pack: Pack, tokenizer: ClipTokenizer): Promise<StableDiffusionModels> {
  const scheduler = pack.component('scheduler');
  return {
    tokenizer,
    textEncoder: await loadTextEncoder(pack),
    unet: await loadUNet(pack),
    vae: await loadVae(pack),
    scheduler: { config: scheduler.config, name: SCHEDULER_CLASSES[scheduler.className] },
  };
}

/** Gives each weight a graph declares the data loaded for it. */
export function attachWeights(g: Graph, weights: ReadonlyMap<string, Float32Array>): void {
  for (const [name, weight] of g.weights) {
    const data = weights.get(name);
    if (!data) throw new Error(`no loaded weight for ${name}`);
    weight.data = data;
  }
}
