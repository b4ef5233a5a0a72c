import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { type Graph, saveWithExternalData, serialize } from '../graph';
import { type EngineWorker, type SessionHandle } from '../runtime';

/** Below this many bytes of initializers a graph travels inline; protobuf caps a whole model at 2 GB. */
export const INLINE_WEIGHT_BYTES = 1.5 * 2 ** 30;

/** Bytes of the weights a graph carries as initializers: all bound ones but those fed at run time. */
export function initializerBytes(g: Graph, weightsAsInputs: ReadonlySet<string>): number {
  let bytes = 0;
  for (const [name, { data }] of g.weights) if (!weightsAsInputs.has(name)) bytes += data?.byteLength ?? 0;
  return bytes;
}

/**
 * Opens an inference session on a graph whose weights are bound, but for `weightsAsInputs` (fed with every run,
 * as LoRA slots are). Graphs with `inlineWeightBytes` or more of weights (a full-size UNet) are written with
 * external data under `scratchDir`, which must outlive the session.
 */
export async function openGraphSession(
  worker: EngineWorker, g: Graph, scratchDir: string,
  { weightsAsInputs = new Set<string>(), inlineWeightBytes = INLINE_WEIGHT_BYTES }: { weightsAsInputs?: ReadonlySet<string>; inlineWeightBytes?: number } = {},
): Promise<SessionHandle> {
  if (initializerBytes(g, weightsAsInputs) < inlineWeightBytes) return worker.createSession(serialize(g, { weightsAsInputs }));
  const path = join(scratchDir, `${g.name}-${randomUUID()}.onnx`);
  const key = saveWithExternalData(g, path, { weightsAsInputs });
  return worker.createSession({ path }, { key });
}
