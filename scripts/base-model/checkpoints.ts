import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { type TrainerCheckpoint } from '../../src/engine/autodiff';
import { fromFloat32, parseSafetensors, serializeSafetensors, type StoredTensor, toFloat32 } from '../../src/engine/weights/safetensors';

/** A pretraining stage's state: the trainer's, the EMA of its weights where kept, and the steps done. */
export interface StageState {
  stepsDone: number;
  checkpoint: TrainerCheckpoint;
  ema?: Record<string, Float32Array>;
}

type Precision = 'F32' | 'F16' | 'BF16';

/**
 * The two forms a stage is saved in. `full` continues exactly: fp32 weights and EMA, AdamW moments in bfloat16
 * (their range matters, not their last digits). `compact` is what one GPU call may send back (64 MiB): fp16
 * weights and EMA, no moments; a run resumed from it restarts AdamW's moments.
 */
const FORMS: Record<'full' | 'compact', { param: Precision; moments?: Precision; ema: Precision }> = {
  full: { param: 'F32', moments: 'BF16', ema: 'F32' },
  compact: { param: 'F16', ema: 'F16' },
};

export async function saveStage(
  path: string, form: keyof typeof FORMS, state: StageState, shapes: ReadonlyMap<string, number[]>,
): Promise<void> {
  const { param, moments, ema } = FORMS[form];
  const entries: [string, StoredTensor][] = [];
  const add = (prefix: string, values: Record<string, Float32Array | Float64Array>, dtype: Precision) => {
    for (const [name, data] of Object.entries(values)) entries.push([`${prefix}.${name}`, fromFloat32(Float32Array.from(data), shapes.get(name)!, dtype)]);
  };
  add('param', state.checkpoint.params, param);
  if (moments) {
    add('m', state.checkpoint.m, moments);
    add('v', state.checkpoint.v, moments);
  }
  if (state.ema) add('ema', state.ema, ema);
  await writeFile(path, serializeSafetensors(new Map(entries), { steps: String(state.stepsDone) }));
}

/** The safetensors header's `__metadata__`. */
function metadataOf(bytes: Uint8Array): Record<string, string> {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length))).__metadata__ ?? {};
}

/** A stage saved by `saveStage` in either form, or undefined when `path` does not exist. */
export async function loadStage(path: string, names: readonly string[]): Promise<StageState | undefined> {
  if (!existsSync(path)) return undefined;
  const bytes = new Uint8Array(await readFile(path));
  const stored = parseSafetensors(bytes);
  const read = (prefix: string) => Object.fromEntries(names.map((name) => {
    const tensor = stored.get(`${prefix}.${name}`);
    if (!tensor) throw new Error(`${path} lacks ${prefix}.${name}: it was saved for another model`);
    return [name, toFloat32(tensor)];
  }));
  const stepsDone = Number(metadataOf(bytes).steps);
  const params = read('param');
  const zeros = () => Object.fromEntries(names.map((name) => [name, new Float32Array(params[name].length)]));
  const full = stored.has(`m.${names[0]}`);
  return {
    stepsDone,
    checkpoint: full ? { steps: stepsDone, params, m: read('m'), v: read('v') } : { steps: 0, params, m: zeros(), v: zeros() },
    ema: stored.has(`ema.${names[0]}`) ? read('ema') : undefined,
  };
}
