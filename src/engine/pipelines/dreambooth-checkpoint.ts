import { type TrainerCheckpoint } from '../autodiff';
import { parseSafetensors, safetensorsMetadata, serializeSafetensors, type StoredTensor } from '../weights/safetensors';
import { DreamBoothError, type DreamBoothCheckpoint } from './dreambooth';

/** Names this file format in the header, so another safetensors file is refused rather than misread. */
const FORMAT = 'bigdiffusion.dreambooth-checkpoint.v2';
const PARTS = ['params', 'm', 'v'] as const;

/**
 * A checkpoint as one safetensors file: each trainable weight and its two AdamW moments as tensors
 * (`params/<name>`, `m/<name>`, `v/<name>`, float32 or float64 as trained), the rest as JSON in the header's
 * metadata. One object, so a store that writes objects whole never holds half a checkpoint.
 */
export function serializeDreamBoothCheckpoint(checkpoint: DreamBoothCheckpoint): Uint8Array {
  const tensors = new Map<string, StoredTensor>();
  for (const part of PARTS) {
    for (const [name, data] of Object.entries(checkpoint.trainer[part])) {
      tensors.set(`${part}/${name}`, {
        dtype: data instanceof Float64Array ? 'F64' : 'F32', shape: [data.length], bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      });
    }
  }
  const { trainer, ...state } = checkpoint;
  return serializeSafetensors(tensors, { format: FORMAT, state: JSON.stringify({ ...state, trainerSteps: trainer.steps }) });
}

export function parseDreamBoothCheckpoint(bytes: Uint8Array): DreamBoothCheckpoint {
  let metadata: Record<string, string>;
  let tensors: Map<string, StoredTensor>;
  try {
    metadata = safetensorsMetadata(bytes);
    tensors = parseSafetensors(bytes);
  } catch (error) {
    throw new DreamBoothError(`not a DreamBooth checkpoint: ${(error as Error).message}`);
  }
  if (metadata.format !== FORMAT) throw new DreamBoothError(`not a DreamBooth checkpoint (format ${metadata.format ?? 'absent'})`);
  const { trainerSteps, ...state } = JSON.parse(metadata.state) as Omit<DreamBoothCheckpoint, 'trainer'> & { trainerSteps: number };
  const trainer: TrainerCheckpoint = { steps: trainerSteps, params: {}, m: {}, v: {} };
  for (const [key, { dtype, bytes: data }] of tensors) {
    const slash = key.indexOf('/');
    const part = key.slice(0, slash) as (typeof PARTS)[number];
    if (!PARTS.includes(part)) throw new DreamBoothError(`not a DreamBooth checkpoint: unexpected tensor ${key}`);
    const copy = new Uint8Array(data); // aligned, and independent of the file's buffer
    trainer[part][key.slice(slash + 1)] = dtype === 'F64' ? new Float64Array(copy.buffer) : new Float32Array(copy.buffer);
  }
  return { ...state, trainer };
}
