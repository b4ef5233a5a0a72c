import { type PackPreset } from '../../src/engine';
import { SD15_PNDM } from '../../src/engine/packs';

/**
 * The base model's shape: Stable Diffusion 1.x's architecture at a size this project can pretrain on one lent GPU
 * in minutes and that generates on a 2-core CPU in seconds.
 * - Images 64 px; a two-level VAE (2x downscale, 4 latent channels) gives 32x32 latents. A factor-1 latent space
 *   would make the UNet run at 64x64 (4x the compute) for images that are just as sharp; a 4x or 8x VAE loses
 *   emoji detail at this size.
 * - UNet [32, 64, 128] channels, 2 layers a block, cross-attention at 16x16 and 8x8 only (attention at 32x32 costs
 *   the most and helps little), text width 128.
 * - A 4-layer CLIP text encoder, width 128, on the project's own BPE vocabulary (`vocabSize`).
 * - Stable Diffusion 1.5's PNDM sampler config, but DDPM's linear betas (1e-4 to 0.02) instead of SD's scaled-linear
 *   ones, and v-prediction (every sampler and DreamBooth of the platform support both targets).
 *   Scaled-linear leaves √ᾱ = 0.068 of the image in the last timestep's latents; averaged over a 32x32 channel,
 *   whose noise averages down to 1/32, that is enough for the UNet to read each channel's mean colour from x_T
 *   (SNR near 1). Sampling starts from pure noise, so the model then reads a colour from the noise: every seed drew
 *   its own saturated palette whatever the prompt (bench/results/base-model/step-2166). Linear betas leave
 *   √ᾱ = 0.0064 (channel-mean SNR about 0.01): the flaw Lin et al. (2024, "Common diffusion noise schedules and
 *   sample steps are flawed") describe.
 *   With epsilon targets the high-noise steps, where layout and colour are decided, learn slowly: there a mistake in
 *   the implied image weighs √ᾱ (about 0.01) in the loss, and after 7,914 steps the caption changed the model's
 *   error at t >= 850 by under 5%. v = √ᾱ ε - √(1-ᾱ) x0 is nearly -x0 there, so those steps learn the image itself
 *   (Salimans & Ho 2022). The shipped pack (step 7,914) predicts epsilon; training continues from it with v.
 * `tiny` shrinks every width for the CPU smoke run in the tests.
 */
export function baseModelPreset({ vocabSize, scalingFactor, tiny = false }: { vocabSize: number; scalingFactor: number; tiny?: boolean }): PackPreset {
  const text = tiny ? 32 : 128;
  const unetChannels = tiny ? [16, 32, 32] : [32, 64, 128];
  return {
    unet: {
      _class_name: 'UNet2DConditionModel',
      _diffusers_version: '0.30.0',
      sample_size: 32,
      in_channels: 4,
      out_channels: 4,
      layers_per_block: tiny ? 1 : 2,
      block_out_channels: unetChannels,
      down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
      up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
      cross_attention_dim: text,
      // SD 1.x legacy naming: the number of heads.
      attention_head_dim: 4,
      norm_num_groups: tiny ? 8 : 16,
    },
    vae: {
      _class_name: 'AutoencoderKL',
      _diffusers_version: '0.30.0',
      sample_size: 64,
      in_channels: 3,
      out_channels: 3,
      latent_channels: 4,
      block_out_channels: tiny ? [16, 32] : [64, 128],
      down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D'],
      up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D'],
      layers_per_block: 1,
      norm_num_groups: tiny ? 8 : 32,
      scaling_factor: scalingFactor,
    },
    textEncoder: {
      architectures: ['CLIPTextModel'],
      model_type: 'clip_text_model',
      vocab_size: vocabSize,
      hidden_size: text,
      intermediate_size: 4 * text,
      num_hidden_layers: tiny ? 1 : 4,
      num_attention_heads: 4,
      max_position_embeddings: 77,
      hidden_act: 'quick_gelu',
      layer_norm_eps: 1e-5,
      // The specials are the vocabulary's last two entries.
      bos_token_id: vocabSize - 2,
      eos_token_id: vocabSize - 1,
      pad_token_id: vocabSize - 1,
    },
    scheduler: { ...SD15_PNDM, beta_schedule: 'linear', beta_start: 0.0001, beta_end: 0.02, prediction_type: 'v_prediction' },
  };
}
