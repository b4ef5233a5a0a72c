import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { type TrainerCheckpoint } from '../../src/engine/autodiff';
import { fromFloat32, parseSafetensors, serializeSafetensors, type StoredTensor, toFloat32 } from '../../src/engine/weights/safetensors';

/** A pretraining stage's state: the trainer's, the EMA of its weights where kept, and the steps done. */
export interface StageState {
  stepsDone: number;
  checkpoint: TrainerCheckpoint;
  ema?: Record<string, Float32Array>;
  /** What the weights were trained to predict (the UNet's `prediction_type`); absent where nothing was recorded. */
  objective?: string;
}

type Precision = 'F32' | 'F16' | 'BF16';

/**
 * The two forms a stage is saved in. `full` continues bit for bit: everything in fp32, one file. `compact` is what
 * one GPU call may send back (files of at most 16 MiB): fp16 weights, and the fp16 EMA in a second file beside
 * (`emaPath`); no moments, so a run resumed from it restarts AdamW's moments.
 */
const FORMS: Record<'full' | 'compact', { param: Precision; moments?: Precision; ema: Precision; emaApart: boolean }> = {
  full: { param: 'F32', moments: 'F32', ema: 'F32', emaApart: false },
  compact: { param: 'F16', ema: 'F16', emaApart: true },
};

const emaPath = (path: string) => path.replace(/\.safetensors$/, '-ema.safetensors');

export async function saveStage(
  path: string, form: keyof typeof FORMS, state: StageState, shapes: ReadonlyMap<string, number[]>,
): Promise<void> {
  const { param, moments, ema, emaApart } = FORMS[form];
  const tensors = (prefix: string, values: Record<string, Float32Array | Float64Array>, dtype: Precision) =>
    Object.entries(values).map(([name, data]): [string, StoredTensor] => [`${prefix}.${name}`, fromFloat32(Float32Array.from(data), shapes.get(name)!, dtype)]);
  const entries = tensors('param', state.checkpoint.params, param);
  if (moments) entries.push(...tensors('m', state.checkpoint.m, moments), ...tensors('v', state.checkpoint.v, moments));
  const averages = state.ema ? tensors('ema', state.ema, ema) : [];
  const metadata = { steps: String(state.stepsDone), ...(state.objective && { objective: state.objective }) };
  if (emaApart && averages.length) await writeFile(emaPath(path), serializeSafetensors(new Map(averages), metadata));
  else entries.push(...averages);
  await writeFile(path, serializeSafetensors(new Map(entries), metadata));
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
  if (existsSync(emaPath(path))) for (const [key, tensor] of parseSafetensors(new Uint8Array(await readFile(emaPath(path))))) stored.set(key, tensor);
  const read = (prefix: string) => Object.fromEntries(names.map((name) => {
    const tensor = stored.get(`${prefix}.${name}`);
    if (!tensor) throw new Error(`${path} lacks ${prefix}.${name}: it was saved for another model`);
    return [name, toFloat32(tensor)];
  }));
  const metadata = metadataOf(bytes);
  const stepsDone = Number(metadata.steps);
  const params = read('param');
  const zeros = () => Object.fromEntries(names.map((name) => [name, new Float32Array(params[name].length)]));
  const full = stored.has(`m.${names[0]}`);
  return {
    stepsDone,
    checkpoint: full ? { steps: stepsDone, params, m: read('m'), v: read('v') } : { steps: 0, params, m: zeros(), v: zeros() },
    ema: stored.has(`ema.${names[0]}`) ? read('ema') : undefined,
    objective: metadata.objective,
  };
}
