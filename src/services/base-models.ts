import type { DataSource } from 'typeorm';
import { z } from 'zod';
import { clipTextKeyPrefix, dropClipTextBuffers, parseClipTextConfig } from '../engine/models/clip-text';
import { ModelConfigError } from '../engine/models/config';
import { declaredTextEncoderWeights, declaredUNetWeights, declaredVaeWeights } from '../engine/models/declared-weights';
import { parseUNetConfig } from '../engine/models/unet';
import { parseVaeConfig, renameLegacyVaeKeys } from '../engine/models/vae';
import { BUNDLED_TINY_SD, createRandomPack } from '../engine/packs/random-pack';
import { loadStableDiffusionFrom, type StableDiffusionModels } from '../engine/pipelines/stable-diffusion';
import { loadClipTokenizerFrom, TokenizerError } from '../engine/tokenizer';
import { weightProblems, WeightBindingError } from '../engine/weights/bind';
import { loadPack, PackError, type Pack, type PackComponent } from '../engine/weights/pack';
import { parseSafetensorsHeader, safetensorsHeaderLength, SafetensorsError, type TensorHeader } from '../engine/weights/safetensors';
import { BaseModel } from '../entities';
import type { ObjectStore } from '../storage/object-store';
import { S3PackSource } from '../storage/s3-pack-source';
import { badInput, conflict, notFound } from './errors';
import { parseId, parseInput } from './validate';

/** Registered pretrained checkpoints: every signed-in user reads them, admins register them. */
export function listBaseModels(db: DataSource): Promise<BaseModel[]> {
  return db.getRepository(BaseModel).find({ order: { name: 'ASC' } });
}

export async function getBaseModel(db: DataSource, id: string): Promise<BaseModel> {
  const baseModel = await db.getRepository(BaseModel).findOneBy({ id: parseId(id) });
  if (!baseModel) throw notFound('Base model');
  return baseModel;
}

/** The one pipeline family the engine runs; `architecture` records it so others can be told apart later. */
const PIPELINES: Record<string, string> = { StableDiffusionPipeline: 'stable-diffusion' };

/**
 * A diffusers pack uploaded under a key prefix of the platform's bucket (`base-models/sd15`): plain
 * key segments, no `..`, so a location can never reach outside the pack's own objects.
 */
const storageLocation = z
  .string()
  .trim()
  .regex(/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*\/?$/, 'must be an object key prefix like base-models/sd15')
  .refine((value) => !value.split('/').includes('..'), 'must not contain ..')
  .max(1024);

const NewBaseModel = z.object({
  name: z.string().trim().min(1, 'must not be empty').max(200),
  storageLocation,
});

export type NewBaseModel = z.input<typeof NewBaseModel>;

/** The pack's models with every config parsed and every weight bound: what a worker generates with. */
export function loadBaseModelPack(store: ObjectStore, location: string): Promise<StableDiffusionModels> {
  return loadStableDiffusionFrom(new S3PackSource(store, location));
}

/** Errors that say what is wrong with a pack's files (as opposed to storage or database failures). */
const PACK_ERRORS = [PackError, WeightBindingError, ModelConfigError, TokenizerError];

/**
 * Registers a pack after checking it as a worker would load it (configs, tokenizer, every weight's
 * name, shape and type), so a broken upload is refused here rather than failing every job that uses
 * it. Weights are checked from their safetensors headers: the API never holds a checkpoint's data.
 */
export async function registerBaseModel(db: DataSource, store: ObjectStore, input: NewBaseModel): Promise<BaseModel> {
  const values = parseInput(NewBaseModel, input, 'input');
  const repo = db.getRepository(BaseModel);
  if (await repo.existsBy({ name: values.name })) throw conflict('A base model with this name exists');
  const location = values.storageLocation.replace(/\/$/, '');
  let architecture: string;
  try {
    const source = new S3PackSource(store, location);
    const pack = await loadPack(source);
    const pipeline = String(pack.modelIndex._class_name);
    architecture = PIPELINES[pipeline];
    if (!architecture) throw badInput(`storageLocation: a ${pipeline} pack; supported: ${Object.keys(PIPELINES).join(', ')}`);
    await loadClipTokenizerFrom(pack.source, pack.component('tokenizer').name);
    await checkWeights(pack, source);
  } catch (error) {
    if (PACK_ERRORS.some((type) => error instanceof type)) throw badInput(`storageLocation: ${(error as Error).message}`);
    throw error;
  }
  return repo.save(repo.create({ name: values.name, storageLocation: location, architecture }));
}

/** The text encoder, UNet and VAE weights against what their configs build, as `loadStableDiffusion` binds them. */
async function checkWeights(pack: Pack, source: S3PackSource): Promise<void> {
  const textEncoder = pack.component('text_encoder');
  const storedText = dropClipTextBuffers(await weightHeaders(textEncoder, source));
  const unet = pack.component('unet');
  const vae = pack.component('vae');
  const problems = [
    ...weightProblems(declaredTextEncoderWeights(parseClipTextConfig(textEncoder.config), clipTextKeyPrefix(storedText.keys())), storedText),
    ...weightProblems(declaredUNetWeights(parseUNetConfig(unet.config)), await weightHeaders(unet, source)),
    ...weightProblems(declaredVaeWeights(parseVaeConfig(vae.config)), renameLegacyVaeKeys(await weightHeaders(vae, source))),
  ];
  if (problems.length > 0) throw new WeightBindingError(problems);
}

/** A component's tensors as its safetensors headers (one file, or the shards an index names) describe them. */
async function weightHeaders(component: PackComponent, source: S3PackSource): Promise<Map<string, TensorHeader>> {
  const file = component.weightsFile;
  if (!file) throw new PackError('NO_WEIGHTS', `pack component ${component.name} has no safetensors weights`);
  if (!file.endsWith('.index.json')) return fileHeader(source, file);
  let weightMap: unknown;
  try {
    weightMap = (JSON.parse(new TextDecoder().decode(await source.read(file))) as { weight_map?: unknown } | null)?.weight_map;
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
  }
  if (typeof weightMap !== 'object' || weightMap === null) throw new PackError('INVALID_FILE', `pack file ${file} has no weight_map`);
  const folder = file.slice(0, file.lastIndexOf('/') + 1);
  const shards = new Map<string, Map<string, TensorHeader>>();
  const tensors = new Map<string, TensorHeader>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, string>)) {
    if (!shards.has(shard)) shards.set(shard, await fileHeader(source, folder + shard));
    const tensor = shards.get(shard)!.get(name);
    if (!tensor) throw new PackError('INVALID_FILE', `pack file ${folder + shard} lacks ${name}, which ${file} places there`);
    tensors.set(name, tensor);
  }
  return tensors;
}

/** One safetensors file's header, read with two ranged GETs; its tensors must lie within the file. */
async function fileHeader(source: S3PackSource, path: string): Promise<Map<string, TensorHeader>> {
  try {
    const headerLength = safetensorsHeaderLength((await source.readRange(path, 0, 8)).bytes);
    const { bytes, size } = await source.readRange(path, 8, 8 + headerLength);
    if (bytes.byteLength < headerLength) throw new SafetensorsError('safetensors: header runs past the end of the file');
    const tensors = parseSafetensorsHeader(bytes);
    for (const [name, { end }] of tensors) {
      if (8 + headerLength + end > size) throw new SafetensorsError(`safetensors: tensor ${name} runs past the end of the file`);
    }
    return tensors;
  } catch (error) {
    if (error instanceof SafetensorsError) throw new PackError('INVALID_FILE', `pack file ${path}: ${error.message}`);
    throw error;
  }
}

/** The base model a fresh installation starts with, so it works before an admin uploads a real one. */
export const BUNDLED_BASE_MODEL = { name: 'bundled-tiny-sd', storageLocation: 'base-models/bundled-tiny-sd', seed: 0 };

/**
 * On a platform with no base model, uploads the bundled tiny pack (seeded random weights: it draws
 * noise, but every part of the platform works with it) and registers it. Processes starting together
 * upload the same bytes and insert under one unique name, so at most one row results.
 */
export async function ensureBundledBaseModel(db: DataSource, store: ObjectStore): Promise<void> {
  const repo = db.getRepository(BaseModel);
  if (await repo.exists()) return;
  const { name, storageLocation, seed } = BUNDLED_BASE_MODEL;
  for (const [path, bytes] of createRandomPack(BUNDLED_TINY_SD, seed)) await store.put(`${storageLocation}/${path}`, bytes);
  await repo.createQueryBuilder().insert().values({ name, storageLocation, architecture: PIPELINES.StableDiffusionPipeline }).orIgnore().execute();
}
