import { createHash, randomUUID } from 'node:crypto';
import { mkdir, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Writes graph bytes to `<dir>/<key>.onnx` once (key defaults to their sha256) and returns that path,
 * so later runs and other processes load the file instead of rebuilding or re-sending the graph.
 * The write goes through a temporary name and a rename: a reader never sees half a model.
 */
export async function cachedModelPath(model: Uint8Array, dir: string, key = sha256Hex(model)): Promise<string> {
  const path = join(dir, `${key}.onnx`);
  if (await exists(path)) return path;
  await mkdir(dir, { recursive: true });
  const partial = `${path}.${randomUUID()}.partial`;
  await writeFile(partial, model);
  await rename(partial, path);
  return path;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}
