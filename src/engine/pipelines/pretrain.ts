import { type AdamWOptions, buildTrainStep, type CompiledGraph, type SavedGraph } from '../autodiff';
import { abs, add, exp, Graph, mul, reduceMean, sub, type Tensor } from '../graph';
import { buildClipTextEncoder, type ClipTextConfig } from '../models/clip-text';
import { buildUNet, type UNetConfig } from '../models/unet';
import { buildVaeDecoder, buildVaeEncoder, type VaeConfig } from '../models/vae';
import { compileBuilt } from './dreambooth-graph';

/*
 * Training a Stable Diffusion model from nothing, in two stages as latent diffusion was trained: first the VAE
 * on images, then the text encoder and UNet together on the frozen VAE's latents (Stable Diffusion froze a
 * pretrained CLIP; a model trained here has none, so its text encoder learns beside the UNet). Every weight of
 * a stage is trainable: the steps carry no frozen initializers.
 */

/** The text encoder's weights are named as transformers 4 saves CLIPTextModel, apart from the UNet's. */
export const TEXT_ENCODER_PREFIX = 'text_model';

export interface PretrainStep {
  compiled: CompiledGraph | SavedGraph;
  /** Every weight of the stage by checkpoint key, in the order the step takes them. */
  trainable: string[];
}

function allWeightsStep(g: Graph, loss: Tensor, optimizer: AdamWOptions): PretrainStep {
  const trainable = [...g.weights.keys()];
  return { compiled: compileBuilt(buildTrainStep({ graph: g, loss, trainable, optimizer })), trainable };
}

export interface VaeStepShape {
  batchSize: number;
  /** Image side in pixels. */
  resolution: number;
  /** The KL term's weight against the per-pixel reconstruction error (latent diffusion's is 1e-6 on sums). */
  klWeight: number;
}

/**
 * AutoencoderKL's training loss on images [batch, 3, R, R] in [-1, 1] (`image`) with the posterior's noise fed
 * as `eps` [batch, latent_channels, r, r]: mean |decode(mean + exp(logvar / 2) eps) - image| plus `klWeight`
 * times the mean KL divergence from N(0, 1). Latent diffusion adds a perceptual and an adversarial term, which
 * sharpen large images; at 64 px and a 2x downscale the L1 term alone reconstructs emoji edges well.
 */
export function vaeTrainStep(config: VaeConfig, shape: VaeStepShape, optimizer: AdamWOptions): PretrainStep {
  const { batchSize, resolution } = shape;
  const factor = 2 ** (config.block_out_channels.length - 1);
  const g = new Graph('vae_pretrain_step');
  const image = g.input('image', 'float32', [batchSize, config.in_channels, resolution, resolution]);
  const eps = g.input('eps', 'float32', [batchSize, config.latent_channels, resolution / factor, resolution / factor]);
  const { mean, logvar } = buildVaeEncoder(g, config, image);
  const latents = add(mean, mul(exp(mul(logvar, 0.5)), eps));
  const reconstruction = buildVaeDecoder(g, config, latents);
  const l1 = reduceMean(abs(sub(reconstruction, image)), [0, 1, 2, 3], false);
  const kl = mul(reduceMean(sub(add(mul(mean, mean), exp(logvar)), add(logvar, 1)), [0, 1, 2, 3], false), 0.5);
  return allWeightsStep(g, add(l1, mul(kl, shape.klWeight)), optimizer);
}

export interface TextToImageStepShape {
  batchSize: number;
  /** Latent side: image side / the VAE's downscaling. */
  latentSize: number;
}

/**
 * The denoising loss with the text encoder in the graph. Inputs: `input_ids` [batch, model_max_length] (the
 * padded captions), `noisy_latents` and `target` (the DDPM forward process and the epsilon or v target, computed
 * on the host), `timesteps` (int64) and `row_weights` [batch]: loss = mean over rows of weight x the row's mean
 * squared error, so a host-side weighting such as min-SNR needs no recompilation. Weights are left unbound.
 */
export function textToImageLoss(text: ClipTextConfig, unet: UNetConfig, sequence: number, { batchSize, latentSize }: TextToImageStepShape): { graph: Graph; loss: Tensor } {
  const latentShape = [batchSize, unet.raw.in_channels, latentSize, latentSize];
  const g = new Graph('text_to_image_loss');
  const ids = g.input('input_ids', 'int64', [batchSize, sequence]);
  const noisy = g.input('noisy_latents', 'float32', latentShape);
  const target = g.input('target', 'float32', latentShape);
  const timesteps = g.input('timesteps', 'int64', [batchSize]);
  const weights = g.input('row_weights', 'float32', [batchSize]);
  const { lastHiddenState } = buildClipTextEncoder(g, text, ids, { prefix: TEXT_ENCODER_PREFIX });
  const error = sub(buildUNet(g, unet, noisy, timesteps, lastHiddenState), target);
  const rowErrors = reduceMean(mul(error, error), [1, 2, 3], false);
  return { graph: g, loss: reduceMean(mul(rowErrors, weights), [0], false) };
}

/** `textToImageLoss` as a train step of every text encoder and UNet weight. */
export function textToImageTrainStep(
  text: ClipTextConfig, unet: UNetConfig, sequence: number, shape: TextToImageStepShape, optimizer: AdamWOptions,
): PretrainStep {
  const { graph, loss } = textToImageLoss(text, unet, sequence, shape);
  return allWeightsStep(graph, loss, optimizer);
}
