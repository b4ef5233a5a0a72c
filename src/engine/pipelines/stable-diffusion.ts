import { Graph } from '../graph';
import { buildClipTextEncoder, type ClipTextConfig, clipTextKeyPrefix, parseClipTextConfig } from '../models/clip-text';
import { expectedWeights } from '../models/params';
import { buildUNet, parseUNetConfig, type UNetConfig } from '../models/unet';
import { buildVaeDecoder, buildVaeEncoder, parseVaeConfig, type VaeConfig } from '../models/vae';
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

/**
 * Reads a pack's configs and weights. A missing, unexpected or mis-shaped tensor in any component is a
 * WeightBindingError naming it; a config the engine cannot build is a ModelConfigError.
 */
export async function loadStableDiffusion(pack: Pack, tokenizer: ClipTokenizer): Promise<StableDiffusionModels> {
  const textComponent = pack.component('text_encoder');
  const textConfig = parseClipTextConfig(textComponent.config);
  const textStored = await textComponent.weights();
  const keyPrefix = clipTextKeyPrefix(textStored.keys());
  const textWeights = bindWeights(declaredWeights((g) =>
    buildClipTextEncoder(g, textConfig, g.input('input_ids', 'int64', [1, 1]), { prefix: keyPrefix })), textStored);
  textStored.clear();

  const unetComponent = pack.component('unet');
  const unetConfig = parseUNetConfig(unetComponent.config);
  const factor = 2 ** (unetConfig.blockOutChannels.length - 1);
  const unetWeights = bindWeights(declaredWeights((g) => buildUNet(
    g, unetConfig,
    g.input('sample', 'float32', [1, unetConfig.raw.in_channels, factor, factor]),
    g.input('timestep', 'float32', [1]),
    g.input('encoder_hidden_states', 'float32', [1, 1, unetConfig.crossAttentionDim[0]]),
  )), await unetComponent.weights());

  const vaeComponent = pack.component('vae');
  const vaeConfig = parseVaeConfig(vaeComponent.config);
  const vaeWeights = bindWeights(declaredWeights((g) => {
    const size = 8 * 2 ** (vaeConfig.block_out_channels.length - 1);
    buildVaeEncoder(g, vaeConfig, g.input('image', 'float32', [1, vaeConfig.in_channels, size, size]));
    buildVaeDecoder(g, vaeConfig, g.input('latents', 'float32', [1, vaeConfig.latent_channels, 1, 1]));
  }), await vaeComponent.weights());

  const schedulerComponent = pack.component('scheduler');
  return {
    tokenizer,
    textEncoder: { config: textConfig, keyPrefix, weights: textWeights },
    unet: { config: unetConfig, sampleSize: Number(unetComponent.config.sample_size ?? 64), weights: unetWeights },
    vae: { config: vaeConfig, weights: vaeWeights },
    scheduler: { config: schedulerComponent.config, name: SCHEDULER_CLASSES[schedulerComponent.className] },
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
