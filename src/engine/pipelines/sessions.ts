import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { type Graph, saveWithExternalData, serialize } from '../graph';
import { type EngineWorker, type SessionHandle } from '../runtime';

/** Below this many weight bytes a graph travels inline; protobuf caps a whole model at 2 GB. */
const INLINE_WEIGHT_BYTES = 1.5 * 2 ** 30;

/**
 * Opens an inference session on a graph whose weights are bound. Graphs with `inlineWeightBytes` or more
 * of weights (a full-size UNet) are written with external data under `scratchDir`, which must outlive the session.
 */
export async function openGraphSession(
  worker: EngineWorker, g: Graph, scratchDir: string, inlineWeightBytes = INLINE_WEIGHT_BYTES,
): Promise<SessionHandle> {
  let weightBytes = 0;
  for (const { data } of g.weights.values()) weightBytes += data?.byteLength ?? 0;
  if (weightBytes < inlineWeightBytes) return worker.createSession(serialize(g));
  const path = join(scratchDir, `${g.name}-${randomUUID()}.onnx`);
  const key = saveWithExternalData(g, path);
  return worker.createSession({ path }, { key });
}
