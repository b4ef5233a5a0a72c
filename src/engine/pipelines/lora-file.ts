import { type LoraLayer, parseUNetLora } from '../models/lora';
import { fromFloat32, parseSafetensors, serializeSafetensors, type StoredTensor } from '../weights/safetensors';

/** A UNet LoRA in diffusers key naming: `<module>.lora.down.weight` [rank, in] and `<module>.lora.up.weight` [out, rank]. */
export type LoraWeights = Map<string, Float32Array>;

const SLOT = /^(?<module>.+)\.lora_(?<slot>A|B)\.weight$/;

/** Graph slot values (peft names, B already carrying any alpha / rank) as diffusers keys, read back with scale 1. */
export function loraFromSlots(values: ReadonlyMap<string, Float32Array>): LoraWeights {
  const lora: LoraWeights = new Map();
  for (const [name, data] of values) {
    const { module, slot } = SLOT.exec(name)!.groups!;
    lora.set(`${module}.lora.${slot === 'A' ? 'down' : 'up'}.weight`, data);
  }
  return lora;
}

/** A LoRA of `rank` as a safetensors file, the layout of diffusers' `save_lora_weights` (no alpha: scale 1). */
export function serializeLora(lora: LoraWeights, rank: number): Uint8Array {
  const tensors = new Map<string, StoredTensor>();
  for (const name of [...lora.keys()].sort()) {
    const data = lora.get(name)!;
    const other = data.length / rank;
    if (!Number.isInteger(other)) throw new Error(`LoRA tensor ${name} holds ${data.length} values, not a multiple of rank ${rank}`);
    tensors.set(name, fromFloat32(data, name.endsWith('.lora.down.weight') ? [rank, other] : [other, rank]));
  }
  return serializeSafetensors(tensors);
}

/** A UNet LoRA safetensors file (diffusers' layout, as `serializeLora` writes it, or peft's) by module path. */
export function parseLoraFile(bytes: Uint8Array): Map<string, LoraLayer> {
  return parseUNetLora(parseSafetensors(bytes));
}
