import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { sizeOf } from '../graph';
import { parseClipTextConfig } from '../models/clip-text';
import { declaredTextEncoderWeights, declaredUNetWeights, declaredVaeWeights } from '../models/declared-weights';
import { parseUNetConfig } from '../models/unet';
import { parseVaeConfig } from '../models/vae';
import { Rng } from '../random';
import { fromFloat32, serializeSafetensors, type StoredTensor } from '../weights/safetensors';
import { clipTokenizerFiles, type ClipTokenizerFiles } from './clip-vocab';

/** The `config.json` of each model of a Stable Diffusion pack, as diffusers and transformers write them. */
export interface PackPreset {
  unet: Record<string, unknown>;
  vae: Record<string, unknown>;
  textEncoder: Record<string, unknown>;
  scheduler: Record<string, unknown>;
}

const DIFFUSERS_VERSION = '0.30.0';

/** The scheduler Stable Diffusion 1.5 ships. */
export const SD15_PNDM = {
  _class_name: 'PNDMScheduler',
  _diffusers_version: DIFFUSERS_VERSION,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
};

const TEXT_HIDDEN_SIZE = 32;

/**
 * A Stable Diffusion 1.x-shaped model small enough for a laptop's CPU: 64x64 images from 8x8 latents
 * (a four-level VAE, as SD's), a three-level UNet attending to the text encoder's hidden states, CLIP's
 * real tokenizer and a 49,408-token text encoder. With random weights it draws noise, but it exercises
 * every part of the platform with no download.
 */
export const BUNDLED_TINY_SD: PackPreset = {
  unet: {
    _class_name: 'UNet2DConditionModel',
    _diffusers_version: DIFFUSERS_VERSION,
    sample_size: 8,
    in_channels: 4,
    out_channels: 4,
    layers_per_block: 2,
    block_out_channels: [32, 64, 64],
    down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
    cross_attention_dim: TEXT_HIDDEN_SIZE,
    // SD 1.x legacy: this is the number of heads.
    attention_head_dim: 4,
    norm_num_groups: 8,
  },
  vae: {
    _class_name: 'AutoencoderKL',
    _diffusers_version: DIFFUSERS_VERSION,
    sample_size: 64,
    in_channels: 3,
    out_channels: 3,
    latent_channels: 4,
    block_out_channels: [16, 32, 32, 32],
    down_block_types: Array(4).fill('DownEncoderBlock2D'),
    up_block_types: Array(4).fill('UpDecoderBlock2D'),
    layers_per_block: 1,
    norm_num_groups: 8,
    scaling_factor: 0.18215,
  },
  textEncoder: {
    architectures: ['CLIPTextModel'],
    model_type: 'clip_text_model',
    vocab_size: 49408,
    hidden_size: TEXT_HIDDEN_SIZE,
    intermediate_size: 4 * TEXT_HIDDEN_SIZE,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    max_position_embeddings: 77,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
    bos_token_id: 49406,
    eos_token_id: 49407,
    pad_token_id: 49407,
  },
  scheduler: SD15_PNDM,
};

/** The weights each model's graph declares: the names and shapes its checkpoint must hold. */
export function declaredPackWeights(preset: PackPreset): Record<'text_encoder' | 'unet' | 'vae', Map<string, readonly number[]>> {
  return {
    // transformers 5 saves CLIPTextModel without the `text_model.` prefix.
    text_encoder: declaredTextEncoderWeights(parseClipTextConfig(preset.textEncoder), ''),
    unet: declaredUNetWeights(parseUNetConfig(preset.unet)),
    vae: declaredVaeWeights(parseVaeConfig(preset.vae)),
  };
}

/**
 * torch's default initialisation, so activations keep a sane scale: Linear and Conv2d weights
 * kaiming-uniform with a = sqrt(5) (bound 1 / sqrt(fan_in)), Embedding N(0, 1), norm scales one.
 * Biases start at zero rather than torch's small uniform, which adds nothing to a random model.
 */
function initialValues(name: string, shape: readonly number[], rng: Rng): Float32Array {
  const count = sizeOf(shape);
  if (name.endsWith('.bias')) return new Float32Array(count);
  if (/_embedding\.weight$/.test(name)) return rng.normalFloat32(count);
  if (shape.length === 1 && /norm/.test(name)) return new Float32Array(count).fill(1);
  if (shape.length === 2 || shape.length === 4) {
    const bound = 1 / Math.sqrt(count / shape[0]);
    return Float32Array.from(rng.uniform(count), (u) => (2 * u - 1) * bound);
  }
  throw new Error(`random pack: no initialisation for ${name} [${shape}]`);
}

/** Seeded starting values for declared weights, drawn in sorted name order (see `initialValues`). */
export function initialWeights(declared: Map<string, readonly number[]>, rng: Rng): Map<string, Float32Array> {
  return new Map([...declared.keys()].sort().map((name) => [name, initialValues(name, declared.get(name)!, rng)]));
}

function randomWeights(declared: Map<string, readonly number[]>, rng: Rng): Uint8Array {
  const tensors = new Map<string, StoredTensor>();
  for (const [name, values] of initialWeights(declared, rng)) tensors.set(name, fromFloat32(values, [...declared.get(name)!]));
  return serializeSafetensors(tensors, { format: 'pt' });
}

const json = (value: unknown) => new TextEncoder().encode(`${JSON.stringify(value, null, 2)}\n`);

/**
 * A complete diffusers-layout Stable Diffusion pack with seeded random weights, by path relative to
 * the pack: the same preset and seed give the same bytes. Models draw from one seeded stream in the
 * order text encoder, UNet, VAE, each in its sorted weight names.
 */
export function createRandomPack(preset: PackPreset, seed: number): Map<string, Uint8Array> {
  const rng = new Rng(seed);
  const declared = declaredPackWeights(preset);
  return stableDiffusionPackFiles(preset, clipTokenizerFiles(), {
    text_encoder: randomWeights(declared.text_encoder, rng),
    unet: randomWeights(declared.unet, rng),
    vae: randomWeights(declared.vae, rng),
  });
}

/** A pack's files by path, as diffusers' `save_pretrained` lays them out, from configs, tokenizer and safetensors bytes. */
export function stableDiffusionPackFiles(
  preset: PackPreset, tokenizer: ClipTokenizerFiles, safetensors: Record<'text_encoder' | 'unet' | 'vae', Uint8Array>,
): Map<string, Uint8Array> {
  const text = new TextEncoder();
  return new Map([
    ['model_index.json', json({
      _class_name: 'StableDiffusionPipeline',
      _diffusers_version: DIFFUSERS_VERSION,
      feature_extractor: [null, null],
      requires_safety_checker: false,
      safety_checker: [null, null],
      scheduler: ['diffusers', String(preset.scheduler._class_name)],
      text_encoder: ['transformers', 'CLIPTextModel'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      unet: ['diffusers', 'UNet2DConditionModel'],
      vae: ['diffusers', 'AutoencoderKL'],
    })],
    ['scheduler/scheduler_config.json', json(preset.scheduler)],
    ['text_encoder/config.json', json(preset.textEncoder)],
    ['text_encoder/model.safetensors', safetensors.text_encoder],
    ['tokenizer/merges.txt', text.encode(tokenizer.mergesTxt)],
    ['tokenizer/tokenizer_config.json', text.encode(tokenizer.tokenizerConfigJson)],
    ['tokenizer/vocab.json', text.encode(tokenizer.vocabJson)],
    ['unet/config.json', json(preset.unet)],
    ['unet/diffusion_pytorch_model.safetensors', safetensors.unet],
    ['vae/config.json', json(preset.vae)],
    ['vae/diffusion_pytorch_model.safetensors', safetensors.vae],
  ]);
}

/** Writes a pack's files under `dir`, creating its folders. */
export async function writePackToFolder(files: ReadonlyMap<string, Uint8Array>, dir: string): Promise<void> {
  for (const [path, bytes] of files) {
    const target = join(dir, path);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, bytes);
  }
}
