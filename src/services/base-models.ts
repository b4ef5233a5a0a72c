import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DataSource } from 'typeorm';
import { z } from 'zod';
import {
  BUNDLED_TINY_SD, checkStableDiffusionPack, createRandomPack, loadPack, loadStableDiffusionFrom, ModelConfigError, PackError, TokenizerError,
  WeightBindingError, type StableDiffusionModels,
} from '../engine';
import { BaseModel } from '../entities';
import type { ObjectStore } from '../storage/object-store';
import { S3PackSource } from '../storage/s3-pack-source';
import { queryEntities } from '../storage/entity-rows';
import { badInput, conflict, notFound } from './errors';
import { parseId, parseInput } from './validate';

/** Registered pretrained checkpoints: every signed-in user reads them, admins register them. */
export function listBaseModels(db: DataSource): Promise<BaseModel[]> {
  return db.getRepository(BaseModel).find({ order: { name: 'ASC' } });
}

/**
 * Base models by id, in one query (for nested fields: every signed-in user reads them). Plain SQL, as
 * every nested list's loader: TypeORM's query building and hydration were a tenth of a long list's CPU.
 */
export function getBaseModels(db: DataSource, ids: readonly string[]): Promise<BaseModel[]> {
  return queryEntities(db, BaseModel, 'SELECT * FROM base_model WHERE id = ANY($1::uuid[])', [[...new Set(ids)]]);
}

export async function getBaseModel(db: DataSource, id: string): Promise<BaseModel> {
  const baseModel = await db.getRepository(BaseModel).findOneBy({ id: parseId(id) });
  if (!baseModel) throw notFound('Base model');
  return baseModel;
}

/** The base model clients start new models from unless they pick one; every platform has one from its first start. */
export async function getDefaultBaseModel(db: DataSource): Promise<BaseModel> {
  const baseModel = await db.getRepository(BaseModel).findOneBy({ isDefault: true });
  if (!baseModel) throw notFound('Default base model');
  return baseModel;
}

/** Makes `id` the default base model (admins), in one transaction so that no reader sees none or two. */
export async function setDefaultBaseModel(db: DataSource, id: string): Promise<BaseModel> {
  const baseModel = await getBaseModel(db, id);
  await db.transaction(async (tx) => {
    const repo = tx.getRepository(BaseModel);
    // One change at a time (readers are not blocked): a concurrent one waits, then sees this default.
    await tx.query('LOCK TABLE base_model IN SHARE ROW EXCLUSIVE MODE');
    await repo.update({ isDefault: true }, { isDefault: false });
    await repo.update({ id: baseModel.id }, { isDefault: true });
  });
  return { ...baseModel, isDefault: true };
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
    await checkStableDiffusionPack(pack, source);
  } catch (error) {
    if (PACK_ERRORS.some((type) => error instanceof type)) throw badInput(`storageLocation: ${(error as Error).message}`);
    throw error;
  }
  return repo.save(repo.create({ name: values.name, storageLocation: location, architecture }));
}

/**
 * The base models a fresh installation can start with (`BUNDLED_BASE_MODEL`), so it works before an admin uploads
 * another: the emoji model pretrained by this project (`npm run train:base`, README "Base model"), shipped in the
 * repository; or a tiny pack of seeded random weights, which draws noise but runs every part of the platform in
 * milliseconds (the tests' default).
 */
export const BUNDLED_BASE_MODELS = {
  'emoji-sd-64': { name: 'emoji-sd-64', files: () => readFolderFiles(fileURLToPath(new URL('../../base-models/emoji-sd-64', import.meta.url))) },
  'tiny-random': { name: 'bundled-tiny-sd', files: async () => createRandomPack(BUNDLED_TINY_SD, 0) },
} satisfies Record<string, { name: string; files: () => Promise<Map<string, Uint8Array>> }>;
export type BundledBaseModelName = keyof typeof BUNDLED_BASE_MODELS;

/** Every file under `dir`, keyed by its path relative to `dir`. */
async function readFolderFiles(dir: string): Promise<Map<string, Uint8Array>> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const files = entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath, entry.name));
  return new Map(await Promise.all(files.map(async (file) => [relative(dir, file), new Uint8Array(await readFile(file))] as const)));
}

/**
 * On a platform with no base model, uploads the bundled pack `which` and registers it as the default. Processes
 * starting together upload the same bytes and insert under one unique name, so at most one row results.
 */
export async function ensureBundledBaseModel(db: DataSource, store: ObjectStore, which: BundledBaseModelName): Promise<void> {
  const repo = db.getRepository(BaseModel);
  if (await repo.exists()) return;
  const { name, files } = BUNDLED_BASE_MODELS[which];
  const storageLocation = `base-models/${name}`;
  for (const [path, bytes] of await files()) await store.put(`${storageLocation}/${path}`, bytes);
  await repo.createQueryBuilder().insert().values({ name, storageLocation, architecture: PIPELINES.StableDiffusionPipeline, isDefault: true }).orIgnore().execute();
}
