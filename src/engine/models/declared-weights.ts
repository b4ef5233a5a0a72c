import { Graph } from '../graph';
import { buildClipTextEncoder, type ClipTextConfig } from './clip-text';
import { expectedWeights } from './params';
import { buildUNet, type UNetConfig } from './unet';
import { buildVaeDecoder, buildVaeEncoder, type VaeConfig } from './vae';

/*
 * The weights each Stable Diffusion component's graph declares: the names and shapes its checkpoint must hold.
 * The graphs are built on the smallest inputs each architecture accepts; its weights do not depend on them.
 */

function declaredWeights(build: (g: Graph) => void): Map<string, readonly number[]> {
  const g = new Graph('declared');
  build(g);
  return expectedWeights(g);
}

/** `keyPrefix`: `text_model` for transformers 4 checkpoints, empty for transformers 5 ones (see `clipTextKeyPrefix`). */
export function declaredTextEncoderWeights(config: ClipTextConfig, keyPrefix: string): Map<string, readonly number[]> {
  return declaredWeights((g) => buildClipTextEncoder(g, config, g.input('input_ids', 'int64', [1, 1]), { prefix: keyPrefix }));
}

export function declaredUNetWeights(config: UNetConfig): Map<string, readonly number[]> {
  const size = 2 ** config.blockOutChannels.length;
  return declaredWeights((g) => buildUNet(
    g, config,
    g.input('sample', 'float32', [1, config.raw.in_channels, size, size]),
    g.input('timestep', 'float32', [1]),
    g.input('encoder_hidden_states', 'float32', [1, 1, config.crossAttentionDim[0]]),
  ));
}

/** Encoder and decoder together, as one `vae/` checkpoint holds them. */
export function declaredVaeWeights(config: VaeConfig): Map<string, readonly number[]> {
  return declaredWeights((g) => {
    const size = 2 ** config.block_out_channels.length;
    buildVaeEncoder(g, config, g.input('image', 'float32', [1, config.in_channels, size, size]));
    buildVaeDecoder(g, config, g.input('latents', 'float32', [1, config.latent_channels, 1, 1]));
  });
}
