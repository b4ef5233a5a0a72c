import { type Graph } from '../src/engine/graph';
import { expectedWeights } from '../src/engine/models/params';
import { declaredUNetWeights } from '../src/engine/models/declared-weights';
import { parseUNetConfig } from '../src/engine/models/unet';
import { clipTokenizerFiles, SD15_PNDM } from '../src/engine/packs';
import { type DreamBoothTrainer } from '../src/engine/pipelines';
import { attachWeights, type StableDiffusionModels } from '../src/engine/pipelines/stable-diffusion';
import { Rng } from '../src/engine/random';
import { ClipTokenizer } from '../src/engine/tokenizer';

/** runwayml/stable-diffusion-v1-5 unet/config.json, the keys that shape the model. */
export const SD15_UNET_CONFIG = {
  act_fn: 'silu',
  attention_head_dim: 8,
  block_out_channels: [320, 640, 1280, 1280],
  cross_attention_dim: 768,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  out_channels: 4,
  sample_size: 64,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
};

/** stable-diffusion-v1-5 vae/config.json, the keys diffusers_bench.py builds its AutoencoderKL from. */
export const SD15_VAE_CONFIG = {
  in_channels: 3,
  out_channels: 3,
  latent_channels: 4,
  layers_per_block: 2,
  block_out_channels: [128, 256, 512, 512],
  down_block_types: Array(4).fill('DownEncoderBlock2D'),
  up_block_types: Array(4).fill('UpDecoderBlock2D'),
  norm_num_groups: 32,
};

/**
 * Weights like torch's default init (uniform, +-1/sqrt(fan_in)), norms as identity, for every declared weight
 * that `values` does not hold yet; `values` keeps them so later graphs of the same model share them.
 * A cheap xorshift: 860M values in seconds; they only need to keep activations finite.
 */
export function randomWeightValues(
  declared: ReadonlyMap<string, readonly number[]>,
  values: Map<string, Float32Array> = new Map(),
): Map<string, Float32Array> {
  let state = 0x9e3779b9;
  for (const [name, shape] of declared) {
    if (values.has(name)) continue;
    const size = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    if (/norm/.test(name)) {
      if (name.endsWith('.weight')) data.fill(1);
    } else {
      const bound = 1 / Math.sqrt(shape.length > 1 ? size / shape[0] : size);
      for (let i = 0; i < size; i++) {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        data[i] = ((state >>> 0) / 2 ** 32 * 2 - 1) * bound;
      }
    }
    values.set(name, data);
  }
  return values;
}

/** `randomWeightValues` for every weight `g` declares, attached to the graph (rounded to float16 in a float16 model). */
export function randomWeights(g: Graph, values: Map<string, Float32Array> = new Map()): Map<string, Float32Array> {
  attachWeights(g, randomWeightValues(expectedWeights(g), values));
  return values;
}

/** What an SD 1.5 LoRA step needs: the UNet with random weights (the same memory as the real ones), a tokenizer, the scheduler. */
export function sd15LoraModels(): Pick<StableDiffusionModels, 'unet' | 'tokenizer' | 'scheduler'> {
  const config = parseUNetConfig(SD15_UNET_CONFIG);
  return {
    unet: { config, sampleSize: 64, weights: randomWeightValues(declaredUNetWeights(config)) },
    tokenizer: ClipTokenizer.fromFiles(clipTokenizerFiles()),
    scheduler: { config: SD15_PNDM, name: 'pndm' },
  };
}

/**
 * `steps` LoRA steps after a warm-up one, on random latents of `latent`x`latent` (1 instance + 1 prior row), each
 * logged; `afterStep` runs after each. Returns every step's seconds, the warm-up's first.
 */
export async function timeLoraSteps(
  trainer: DreamBoothTrainer, latent: number, steps: number, log: (line: string) => void, afterStep: (step: number) => void = () => {},
): Promise<number[]> {
  const rng = new Rng(1);
  const count = 2 * 4 * latent * latent;
  const times: number[] = [];
  for (let step = 0; step <= steps; step++) {
    const start = performance.now();
    const { loss } = await trainer.step({
      latents: rng.normalFloat32(count), noise: rng.normalFloat32(count), timesteps: [500, 500],
      encoderHiddenStates: rng.normalFloat32(2 * 77 * 768),
    }, 1e-4);
    times.push((performance.now() - start) / 1000);
    log(`${step === 0 ? 'first step (warm-up)' : `step ${step}`}: ${times[step].toFixed(1)} s, loss ${loss.toFixed(4)}`);
    afterStep(step);
  }
  return times;
}
