import { readFile, stat } from 'node:fs/promises';
import { isAbsolute, join, normalize, sep } from 'node:path';
import { parseSafetensors, readSafetensorsHeader, SafetensorsError, type StoredTensor, type TensorHeader } from './safetensors';

/** Where a pack's files come from: a folder here, object storage in the platform. Paths use `/`. */
export interface PackSource {
  read(relPath: string): Promise<Uint8Array>;
  exists(relPath: string): Promise<boolean>;
}

/** A source that also reads part of a file (object storage, with ranged GETs), so a pack's weights can be checked from their headers. */
export interface RangedPackSource extends PackSource {
  /** Bytes [start, end) of a file (fewer where it ends sooner) and the file's size. */
  readRange(relPath: string, start: number, end: number): Promise<{ bytes: Uint8Array; size: number }>;
}

export type PackErrorCode = 'MISSING_FILE' | 'INVALID_FILE' | 'NO_WEIGHTS' | 'UNKNOWN_COMPONENT' | 'INVALID_PATH';

export class PackError extends Error {
  override readonly name = 'PackError';
  constructor(
    readonly code: PackErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** A pack unpacked in a local folder. */
export class FolderPackSource implements PackSource {
  constructor(readonly root: string) {}

  async read(relPath: string): Promise<Uint8Array> {
    try {
      return await readFile(this.#resolve(relPath));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new PackError('MISSING_FILE', `pack has no ${relPath}`);
      throw error;
    }
  }

  async exists(relPath: string): Promise<boolean> {
    try {
      return (await stat(this.#resolve(relPath))).isFile();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw error;
    }
  }

  /** A relative path that stays inside the pack: a pack's own files must not point elsewhere. */
  #resolve(relPath: string): string {
    const normalized = normalize(relPath);
    if (isAbsolute(normalized) || normalized === '..' || normalized.startsWith(`..${sep}`)) {
      throw new PackError('INVALID_PATH', `pack path ${relPath} leaves the pack`);
    }
    return join(this.root, normalized);
  }
}

/** One entry of `model_index.json` with its folder's config and, for models, its weights. */
export interface PackComponent {
  name: string;
  /** `diffusers` or `transformers`. */
  library: string;
  className: string;
  /** The parsed `config.json` (`scheduler_config.json`, `tokenizer_config.json` for those folders). */
  config: Record<string, unknown>;
  /** The safetensors file (or sharded index) holding the weights, relative to the pack; null if none. */
  weightsFile: string | null;
  /** Reads the weights anew on each call; the caller keeps them as long as it needs. */
  weights(): Promise<Map<string, StoredTensor>>;
}

export interface Pack {
  source: PackSource;
  /** The parsed `model_index.json`. */
  modelIndex: Record<string, unknown>;
  components: ReadonlyMap<string, PackComponent>;
  /** The named component, or a PackError listing those the pack has. */
  component(name: string): PackComponent;
}

// Diffusers names a folder's config after the kind of object it configures.
const CONFIG_FILES = ['config.json', 'scheduler_config.json', 'tokenizer_config.json'];
// Diffusers models save `diffusion_pytorch_model`, transformers models `model`; large ones as shards.
const WEIGHT_FILES = [
  'diffusion_pytorch_model.safetensors',
  'model.safetensors',
  'diffusion_pytorch_model.safetensors.index.json',
  'model.safetensors.index.json',
];

/** Reads a diffusers pack's index and component configs; weights load only when asked for. */
export async function loadPack(source: PackSource): Promise<Pack> {
  const modelIndex = await readJson(source, 'model_index.json');
  const components = new Map<string, PackComponent>();
  for (const [name, entry] of Object.entries(modelIndex)) {
    // Components are `[library, class]` pairs; `[null, null]` marks an optional part left out.
    if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[0] !== 'string' || typeof entry[1] !== 'string') continue;
    const configFile = await firstExisting(source, CONFIG_FILES.map((file) => `${name}/${file}`));
    if (!configFile) throw new PackError('MISSING_FILE', `pack component ${name} has none of ${CONFIG_FILES.join(', ')}`);
    const weightsFile = await firstExisting(source, WEIGHT_FILES.map((file) => `${name}/${file}`));
    components.set(name, {
      name,
      library: entry[0],
      className: entry[1],
      config: await readJson(source, configFile),
      weightsFile,
      weights: () => readWeights(source, name, weightsFile, (file) => readTensors(source, file)),
    });
  }
  return {
    source,
    modelIndex,
    components,
    component(name) {
      const component = components.get(name);
      if (!component) throw new PackError('UNKNOWN_COMPONENT', `pack has no component ${name}; it has ${[...components.keys()].join(', ')}`);
      return component;
    },
  };
}

async function firstExisting(source: PackSource, paths: string[]): Promise<string | null> {
  for (const path of paths) if (await source.exists(path)) return path;
  return null;
}

async function readJson(source: PackSource, path: string): Promise<Record<string, unknown>> {
  const text = new TextDecoder().decode(await source.read(path));
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new PackError('INVALID_FILE', `pack file ${path} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new PackError('INVALID_FILE', `pack file ${path} must hold a JSON object`);
  }
  return value as Record<string, unknown>;
}

/**
 * A component's tensors as its safetensors headers describe them, read with two ranged reads a file:
 * enough to check a checkpoint against its config without reading its data.
 */
export function readWeightHeaders(source: RangedPackSource, component: PackComponent): Promise<Map<string, TensorHeader>> {
  return readWeights(source, component.name, component.weightsFile, (path) =>
    asPackFile(path, () => readSafetensorsHeader((start, end) => source.readRange(path, start, end))),
  );
}

/** Each tensor of a component's weights file, `read` from it, or from the shards it indexes. */
function readWeights<T>(source: PackSource, component: string, weightsFile: string | null, read: (path: string) => Promise<Map<string, T>>): Promise<Map<string, T>> {
  if (!weightsFile) throw new PackError('NO_WEIGHTS', `pack component ${component} has no safetensors weights`);
  return weightsFile.endsWith('.index.json') ? readShards(source, weightsFile, read) : read(weightsFile);
}

async function readTensors(source: PackSource, path: string): Promise<Map<string, StoredTensor>> {
  const bytes = await source.read(path);
  return asPackFile(path, async () => parseSafetensors(bytes));
}

/** A file that is not valid safetensors is a PackError naming the file. */
async function asPackFile<T>(path: string, parse: () => Promise<T>): Promise<T> {
  try {
    return await parse();
  } catch (error) {
    if (error instanceof SafetensorsError) throw new PackError('INVALID_FILE', `pack file ${path}: ${error.message}`);
    throw error;
  }
}

/** A sharded checkpoint: `{weight_map: {tensor: shard file}}` beside the shards. */
async function readShards<T>(source: PackSource, indexPath: string, read: (path: string) => Promise<Map<string, T>>): Promise<Map<string, T>> {
  const weightMap = (await readJson(source, indexPath)).weight_map;
  if (typeof weightMap !== 'object' || weightMap === null) {
    throw new PackError('INVALID_FILE', `pack file ${indexPath} has no weight_map`);
  }
  const folder = indexPath.slice(0, indexPath.lastIndexOf('/') + 1);
  const byShard = new Map<string, string[]>();
  for (const [tensor, shard] of Object.entries(weightMap as Record<string, string>)) {
    byShard.set(shard, [...(byShard.get(shard) ?? []), tensor]);
  }
  const tensors = new Map<string, T>();
  for (const [shard, names] of byShard) {
    const stored = await read(folder + shard);
    for (const name of names) {
      const tensor = stored.get(name);
      if (!tensor) throw new PackError('INVALID_FILE', `pack file ${folder + shard} lacks ${name}, which ${indexPath} places there`);
      tensors.set(name, tensor);
    }
  }
  return tensors;
}
