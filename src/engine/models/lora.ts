import { add, cast, type Graph, linear, mul, sizeOf, type Tensor } from '../graph';
import { type TensorData } from '../runtime';
import { toFloat32, type StoredTensor } from '../weights/safetensors';
import { linearLayer } from './layers';
import { type LinearBuilder } from './unet';

/**
 * LoRA for the UNet: y = W x + scale * B (A x), with A [rank, in] and B [out, rank] per adapted linear layer.
 * The graph gets LoRA *slots* once (A and B of a fixed rank as graph weights, fed as inputs, plus a scalar
 * `lora_scale` input); applying, swapping or scaling a LoRA is a new set of feeds for the same session.
 */

export class LoraError extends Error {
  override readonly name = 'LoraError';
}

/** The rank when none is asked for: diffusers' DreamBooth LoRA script's `--rank` default. */
export const DEFAULT_LORA_RANK = 4;

/** peft's usual Stable Diffusion targets: the attention projections. */
export const ATTENTION_TARGETS = ['to_q', 'to_k', 'to_v', 'to_out.0'] as const;

const LORA_SCALE_INPUT = 'lora_scale';

/** One adapted layer as a file stores it; `alpha` (kohya/peft network alpha) scales B by alpha / rank. */
export interface LoraLayer {
  down: Float32Array;
  up: Float32Array;
  rank: number;
  inFeatures: number;
  outFeatures: number;
  alpha?: number;
}

// diffusers writes `<module>.lora.down.weight` / `.lora.up.weight`; peft `<module>.lora_A[.<adapter>].weight` / `lora_B`.
const KEY = /^(?<module>.+)\.(?:lora\.(?<old>down|up)|lora_(?<peft>A|B)(?:\.[A-Za-z0-9_-]+)?)\.weight$/;
const ALPHA_KEY = /^(?<module>.+)\.alpha$/;
const TEXT_ENCODER_PREFIX = /^text_encoder(?:_2)?\./;

/**
 * The UNet layers of a diffusers- or peft-format LoRA state dict, by module path (`down_blocks.0.attentions.0.
 * transformer_blocks.0.attn1.to_q`). Keys may carry `unet.` or `base_model.model.` prefixes; text encoder keys
 * belong to another model and are left out. Any other key, or a half-present layer, is an error naming it.
 */
export function parseUNetLora(stored: ReadonlyMap<string, StoredTensor>): Map<string, LoraLayer> {
  const parts = new Map<string, { down?: StoredTensor; up?: StoredTensor; alpha?: StoredTensor }>();
  const part = (module: string) => parts.get(module) ?? parts.set(module, {}).get(module)!;
  for (const [key, tensor] of stored) {
    if (TEXT_ENCODER_PREFIX.test(key)) continue;
    const name = key.replace(/^unet\./, '').replace(/^base_model\.model\./, '');
    const match = KEY.exec(name);
    const alpha = ALPHA_KEY.exec(name);
    if (match) {
      const { module, old, peft } = match.groups!;
      part(module)[old === 'down' || peft === 'A' ? 'down' : 'up'] = tensor;
    } else if (alpha) {
      part(alpha.groups!.module).alpha = tensor;
    } else {
      throw new LoraError(`unrecognized LoRA key ${key}: expected diffusers (lora.down/lora.up) or peft (lora_A/lora_B) names`);
    }
  }
  const layers = new Map<string, LoraLayer>();
  for (const [module, { down, up, alpha }] of parts) {
    if (!down || !up) throw new LoraError(`LoRA layer ${module} lacks its ${down ? 'up (B)' : 'down (A)'} matrix`);
    if (down.shape.length !== 2 || up.shape.length !== 2 || down.shape[0] !== up.shape[1]) {
      throw new LoraError(`LoRA layer ${module}: A [${down.shape}] and B [${up.shape}] do not form a low-rank pair`);
    }
    const layer: LoraLayer = {
      down: toFloat32(down), up: toFloat32(up), rank: down.shape[0], inFeatures: down.shape[1], outFeatures: up.shape[0],
    };
    if (alpha) {
      if (sizeOf(alpha.shape) !== 1) throw new LoraError(`LoRA alpha of ${module} must be a scalar, got [${alpha.shape}]`);
      layer.alpha = toFloat32(alpha)[0];
    }
    layers.set(module, layer);
  }
  return layers;
}

/** The rank of a LoRA file from its tensors' shapes alone (the header is enough): its A matrices are [rank, in]. */
export function loraRank(tensors: ReadonlyMap<string, { shape: readonly number[] }>): number | undefined {
  for (const [key, { shape }] of tensors) {
    const groups = KEY.exec(key)?.groups;
    if (groups && (groups.old === 'down' || groups.peft === 'A')) return shape[0];
  }
  return undefined;
}

/** The LoRA slots of one graph: pass `linear` to buildUNet, serialize with `weightsAsInputs: names()`. */
export class LoraSlots {
  readonly layers = new Map<string, { inFeatures: number; outFeatures: number }>();
  readonly scale: Tensor;

  constructor(readonly graph: Graph, readonly rank: number, readonly targets: readonly string[] = ATTENTION_TARGETS) {
    if (!Number.isInteger(rank) || rank < 1) throw new LoraError(`LoRA rank must be a positive integer, got ${rank}`);
    this.scale = graph.input(LORA_SCALE_INPUT, 'float32', []);
  }

  /**
   * Builds the base layer and, when its name ends with a target, adds scale * B (A x) beside it. The slots are fed
   * (or trained) in float32, and cast to the model's dtype in a float16 model.
   */
  readonly linear: LinearBuilder = (p, x, inFeatures, outFeatures, bias) => {
    const base = linearLayer(p, x, inFeatures, outFeatures, bias);
    if (!this.targets.some((target) => p.prefix === target || p.prefix.endsWith(`.${target}`))) return base;
    this.layers.set(p.prefix, { inFeatures, outFeatures });
    const a = cast(p.weight('lora_A.weight', [this.rank, inFeatures], 'float32'), x.dtype);
    const b = cast(p.weight('lora_B.weight', [outFeatures, this.rank], 'float32'), x.dtype);
    return add(base, mul(linear(linear(x, a), b), cast(this.scale, x.dtype)));
  };

  /** The graph weights of the slots (peft names `<module>.lora_A.weight`), fed as inputs or trained. */
  names(): Set<string> {
    return new Set([...this.layers.keys()].flatMap((module) => [`${module}.lora_A.weight`, `${module}.lora_B.weight`]));
  }

  /**
   * Each slot's A and B for `lora`: its matrices zero-padded to the slot rank (exact: padded rows and columns add
   * nothing), B multiplied by alpha / rank where the file gives alpha, zeros for layers it leaves alone; `null`
   * gives all zeros. Throws before producing anything when the LoRA does not fit the slots.
   */
  values(lora: ReadonlyMap<string, LoraLayer> | null): Map<string, Float32Array> {
    for (const [module, layer] of lora ?? []) {
      const slot = this.layers.get(module);
      if (!slot) throw new LoraError(`LoRA adapts ${module}, which has no slot in this graph (targets ${this.targets.join(', ')})`);
      if (slot.inFeatures !== layer.inFeatures || slot.outFeatures !== layer.outFeatures) {
        throw new LoraError(`LoRA layer ${module} maps ${layer.inFeatures} -> ${layer.outFeatures} features, the model ${slot.inFeatures} -> ${slot.outFeatures}`);
      }
      if (layer.rank > this.rank) throw new LoraError(`LoRA layer ${module} has rank ${layer.rank}, the graph's slots hold ${this.rank}`);
    }
    const values = new Map<string, Float32Array>();
    for (const [module, { inFeatures, outFeatures }] of this.layers) {
      const a = new Float32Array(this.rank * inFeatures);
      const b = new Float32Array(outFeatures * this.rank);
      const layer = lora?.get(module);
      if (layer) {
        a.set(layer.down);
        const factor = layer.alpha === undefined ? 1 : layer.alpha / layer.rank;
        for (let o = 0; o < outFeatures; o++) {
          for (let r = 0; r < layer.rank; r++) b[o * this.rank + r] = layer.up[o * layer.rank + r] * factor;
        }
      }
      values.set(`${module}.lora_A.weight`, a);
      values.set(`${module}.lora_B.weight`, b);
    }
    return values;
  }

  /** Feeds applying `lora` (or none, with `null`) at `scale` to a session of this graph. */
  feeds(lora: ReadonlyMap<string, LoraLayer> | null, scale = 1): Record<string, TensorData> {
    const feeds: Record<string, TensorData> = { [LORA_SCALE_INPUT]: { dtype: 'float32', dims: [], data: Float32Array.of(scale) } };
    for (const [name, data] of this.values(lora)) {
      feeds[name] = { dtype: 'float32', dims: [...this.graph.weights.get(name)!.tensor.shape], data };
    }
    return feeds;
  }
}
