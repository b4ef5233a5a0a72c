import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { type Graph } from '../../src/engine/graph';
import { expectedWeights } from '../../src/engine/models/params';
import { parsePythonJson } from '../../src/engine/schedulers/python-json';
import { bindWeights } from '../../src/engine/weights/bind';
import { readSafetensors, type StoredTensor } from '../../src/engine/weights/safetensors';

/**
 * The tiny-sd15 fixtures: `FIXTURES` if set, else the copy the GPU stage carries (`.gpu-stage/tiny-sd15`),
 * else the shared folder beside the checkout. Paths are from the repository root, where the bench runs.
 */
export function fixturesDir(): string {
  const candidates = [process.env.FIXTURES, '.gpu-stage/tiny-sd15', '../shared/fixtures/tiny-sd15'].filter(Boolean) as string[];
  const found = candidates.find((dir) => existsSync(join(dir, 'reference.json')));
  if (!found) throw new Error(`no tiny-sd15 fixtures in ${candidates.join(', ')}`);
  return resolve(found);
}

export interface Reference {
  dir: string;
  json: any;
  tensors: Map<string, StoredTensor>;
}

export async function loadReference(dir: string): Promise<Reference> {
  const json = parsePythonJson(await readFile(join(dir, 'reference.json'), 'utf8'));
  return { dir, json, tensors: await readSafetensors(join(dir, 'reference.safetensors')) };
}

/** Binds the checkpoint tensors the graph declares (a checkpoint may hold more, e.g. the VAE's other half). */
export function bindFrom(g: Graph, stored: ReadonlyMap<string, StoredTensor>, skip: ReadonlySet<string> = new Set()): void {
  const expected = expectedWeights(g);
  for (const name of skip) expected.delete(name);
  const subset = new Map([...stored].filter(([name]) => expected.has(name)));
  for (const [name, data] of bindWeights(expected, subset)) g.weights.get(name)!.data = data;
}
