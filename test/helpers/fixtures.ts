import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parsePythonJson } from '../../src/engine/schedulers/python-json';
import { readSafetensors, type StoredTensor } from '../../src/engine/weights/safetensors';

export { relativeL2 } from './relative-l2';

/** The shared reference fixtures live beside the project; a user's clone has none. */
export const FIXTURES_DIR = resolve(import.meta.dirname, '../../../shared/fixtures');
export const TINY_SD15 = join(FIXTURES_DIR, 'tiny-sd15');
export const hasFixtures = existsSync(join(TINY_SD15, 'reference.json'));

if (!hasFixtures) {
  console.warn(`[fixtures] ${TINY_SD15} is absent: parity tests are skipped (CI always has ../shared).`);
}

export async function loadReference(): Promise<{ json: any; tensors: Map<string, StoredTensor> }> {
  const json = parsePythonJson(await readFile(join(TINY_SD15, 'reference.json'), 'utf8'));
  const tensors = await readSafetensors(join(TINY_SD15, 'reference.safetensors'));
  return { json, tensors };
}
