import type { DataSource, EntityManager } from 'typeorm';
import {
  loadClipTokenizerFrom, loadPack, packImageGeometry, packScheduler, type ClipTokenizer, type ImageGeometry, type SchedulerName,
} from '../engine';
import { BaseModel, FineTuneMethod, Model, ModelVersion, type User } from '../entities';
import type { ObjectStore } from '../storage/object-store';
import { S3PackSource } from '../storage/s3-pack-source';
import { queryEntities } from '../storage/entity-rows';
import { conflict } from './errors';
import { getModel } from './models';
import { firstPagesOf, pageOf, type Page, type PageRequest } from './pagination';
import { parseId } from './validate';

/**
 * What a worker loads to run one state of a model: the base model's pack, plus at most one object of
 * trained weights on top of it. A model's versions all share one method (see `startFineTune`), so a
 * version is either LoRA layers over the base UNet or a whole UNet.
 */
export interface VersionWeights {
  modelId: string;
  baseModelId: string;
  /** Object-key prefix of the base model's diffusers pack. */
  basePack: string;
  /** Null: the model has no version yet and runs on the base weights. */
  versionId: string | null;
  /** Object key of a safetensors LoRA (diffusers key naming) for the base UNet. */
  lora: string | null;
  /** Object key of a safetensors UNet (checkpoint key naming) replacing the base UNet. */
  unet: string | null;
}

/**
 * The weights of one version of a model (null: the base model's own), for workers, whose jobs were
 * authorized when they were queued.
 */
export async function versionWeights(
  db: DataSource | EntityManager,
  modelId: string,
  versionId: string | null,
): Promise<VersionWeights> {
  const model = await db.getRepository(Model).findOneByOrFail({ id: modelId });
  const base = await db.getRepository(BaseModel).findOneByOrFail({ id: model.baseModelId });
  const version = versionId ? await db.getRepository(ModelVersion).findOneByOrFail({ id: versionId, modelId }) : null;
  const key = version?.weightsKey ?? null;
  return {
    modelId,
    baseModelId: base.id,
    basePack: base.storageLocation,
    versionId: version?.id ?? null,
    lora: version?.method === FineTuneMethod.LORA ? key : null,
    unet: version?.method === FineTuneMethod.FULL ? key : null,
  };
}

/**
 * The first page of each model's version history, newest first, in one query; the caller has checked
 * that the user sees the models.
 */
export function firstVersionPages(db: DataSource, modelIds: readonly string[], first: number | null): Promise<Map<string, Page<ModelVersion>>> {
  return firstPagesOf(db.getRepository(ModelVersion).createQueryBuilder('version'), 'modelId', modelIds, { first });
}

/** A page of the version history of a model the user may see, newest first (versions are made in order). */
export async function listModelVersions(db: DataSource, user: User, modelId: string, page: PageRequest): Promise<Page<ModelVersion>> {
  return modelVersionPage(db, (await getModel(db, user, parseId(modelId, 'modelId'))).id, page);
}

/** A page of a model's version history; the caller has checked that the user sees the model. */
export function modelVersionPage(db: DataSource, modelId: string, page: PageRequest): Promise<Page<ModelVersion>> {
  return pageOf(db.getRepository(ModelVersion).createQueryBuilder('version').where('version.modelId = :modelId', { modelId }), page);
}

/** Versions by id, in one query; the caller has checked that the user sees their models. */
export function getVersions(db: DataSource, ids: readonly string[]): Promise<ModelVersion[]> {
  return queryEntities(db, ModelVersion, 'SELECT * FROM model_version WHERE id = ANY($1::uuid[])', [[...new Set(ids)]]);
}

export interface NewVersion {
  /** Null: the base model's own weights. */
  weightsKey: string | null;
  /** The weights object's size; absent (0) when it has no object of its own (the base's, or an earlier version's). */
  bytes?: number;
  method: FineTuneMethod;
  contributionId: string | null;
}

/**
 * Appends a version after the model's head and makes it the head. The model row is locked for the
 * transaction, and `expectedHeadId` (the head the new weights were computed from) must still be the
 * head: a concurrent writer makes this a CONFLICT, never a lost update.
 */
export async function appendVersion(
  tx: EntityManager,
  modelId: string,
  expectedHeadId: string | null,
  values: NewVersion,
): Promise<ModelVersion> {
  const model = await tx.getRepository(Model).findOneOrFail({ where: { id: modelId }, lock: { mode: 'pessimistic_write' } });
  if (model.headVersionId !== expectedHeadId) throw conflict('The model changed while this version was being made');
  const [{ last }] = await tx.query('SELECT coalesce(max(number), 0) AS last FROM model_version WHERE "modelId" = $1', [modelId]);
  const versions = tx.getRepository(ModelVersion);
  const version = await versions.save(
    versions.create({ modelId, number: Number(last) + 1, parentVersionId: model.headVersionId, ...values }),
  );
  await tx.getRepository(Model).update(modelId, { headVersionId: version.id });
  return version;
}

/**
 * Writers of a model's versions (a training run, a revert) hold this PostgreSQL advisory lock, so
 * contributions to one metamodel happen one after another. The key is derived from the model id.
 */
const MODEL_LOCK_KEY = `hashtextextended('bigdiffusion:model-versions:' || $1, 0)`;

/** Takes the lock for the rest of `tx` if no one holds it; false when a writer is at work. */
export async function tryLockVersions(tx: EntityManager, modelId: string): Promise<boolean> {
  const [{ locked }] = await tx.query(`SELECT pg_try_advisory_xact_lock(${MODEL_LOCK_KEY}) AS locked`, [modelId]);
  return locked;
}

/**
 * Takes the lock on a connection of its own, held until `release`; waits while another writer holds
 * it, checking `signal` between tries so a canceled job stops waiting.
 */
export async function lockVersions(db: DataSource, modelId: string, signal: AbortSignal, pollMs = 500): Promise<() => Promise<void>> {
  const runner = db.createQueryRunner();
  await runner.connect();
  try {
    for (;;) {
      signal.throwIfAborted();
      const [{ locked }] = await runner.query(`SELECT pg_try_advisory_lock(${MODEL_LOCK_KEY}) AS locked`, [modelId]);
      if (locked) break;
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
  } catch (error) {
    await runner.release();
    throw error;
  }
  return async () => {
    try {
      await runner.query(`SELECT pg_advisory_unlock(${MODEL_LOCK_KEY})`, [modelId]);
    } finally {
      await runner.release();
    }
  };
}

/** What requests are checked against before they are queued. */
export interface BasePackInfo {
  tokenizer: ClipTokenizer;
  /** Image sizes; training images are square, `nativeSize` pixels a side. */
  geometry: ImageGeometry;
  /** The pack's own scheduler, what generation samples with unless the request names one. */
  scheduler: SchedulerName | undefined;
}

const packInfo = new Map<string, Promise<BasePackInfo>>();

/** Tokenizer, image geometry and scheduler of a base model; base models never change, so this is kept per process. */
export function basePackInfo(store: ObjectStore, baseModel: BaseModel): Promise<BasePackInfo> {
  const key = `${baseModel.id}:${baseModel.storageLocation}`;
  let info = packInfo.get(key);
  if (!info) {
    info = (async () => {
      const pack = await loadPack(new S3PackSource(store, baseModel.storageLocation));
      return { tokenizer: await loadClipTokenizerFrom(pack.source), geometry: packImageGeometry(pack), scheduler: packScheduler(pack) };
    })();
    info.catch(() => packInfo.delete(key));
    packInfo.set(key, info);
  }
  return info;
}
