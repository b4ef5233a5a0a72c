import type { DataSource } from 'typeorm';
import { Brackets, type SelectQueryBuilder } from 'typeorm';
import { z } from 'zod';
import { BaseModel, Model, ModelKind, ModelVersion, type User } from '../entities';
import type { ObjectStore } from '../storage/object-store';
import { badInput, forbidden, notFound } from './errors';
import { pageOf, whereCreated, type CreatedFilter, type Page, type PageRequest } from './pagination';
import { parseId, parseInput } from './validate';
import { isAdmin, ownerFilter } from './viewer';

/**
 * Tenancy for models, the root of most other rules: a user sees their own PRIVATE and PRIVATE_META
 * models and every public META model; an admin sees all. Only the owner changes a private model;
 * only an admin changes a META model directly (users change it through contributions).
 */
export function visibleModels(db: DataSource, user: User, alias = 'model'): SelectQueryBuilder<Model> {
  const query = db.getRepository(Model).createQueryBuilder(alias);
  if (isAdmin(user)) return query;
  return query.where(
    new Brackets((q) =>
      q.where(`${alias}.kind = :meta`, { meta: ModelKind.META }).orWhere(`${alias}.ownerId = :viewer`, { viewer: user.id }),
    ),
  );
}

export function canSeeModel(user: User, model: Model): boolean {
  return isAdmin(user) || model.kind === ModelKind.META || model.ownerId === user.id;
}

export function canChangeModel(user: User, model: Model): boolean {
  return isAdmin(user) || (model.kind !== ModelKind.META && model.ownerId === user.id);
}

export interface ModelFilter extends CreatedFilter {
  kind?: ModelKind | null;
  baseModelId?: string | null;
  /** One user's models: an admin's filter (anyone else may name only themselves). */
  ownerId?: string | null;
}

/** A page of the models the user sees (listModels' tenancy: `visibleModels`), newest first. */
export function listModels(db: DataSource, user: User, filter: ModelFilter, page: PageRequest): Promise<Page<Model>> {
  const query = whereCreated(visibleModels(db, user), filter);
  if (filter.kind) query.andWhere('model.kind = :kind', { kind: filter.kind });
  if (filter.baseModelId != null) query.andWhere('model.baseModelId = :baseModelId', { baseModelId: parseId(filter.baseModelId, 'baseModelId') });
  if (filter.ownerId != null) query.andWhere('model.ownerId = :ownerId', { ownerId: ownerFilter(user, filter.ownerId) });
  return pageOf(query, page);
}

/** A model the user may see; NOT_FOUND otherwise, so ids of others' models reveal nothing. */
export async function getModel(db: DataSource, user: User, id: string): Promise<Model> {
  const model = await db.getRepository(Model).findOneBy({ id: parseId(id) });
  if (!model || !canSeeModel(user, model)) throw notFound('Model');
  return model;
}

/** A model the user may change: NOT_FOUND when invisible, FORBIDDEN when visible but not theirs. */
export async function getModelToChange(db: DataSource, user: User, id: string, field = 'id'): Promise<Model> {
  const model = await db.getRepository(Model).findOneBy({ id: parseId(id, field) });
  if (!model || !canSeeModel(user, model)) throw notFound('Model');
  if (!canChangeModel(user, model)) throw forbidden('Only the owner may change this model');
  return model;
}

const modelName = z.string().trim().min(1, 'must not be empty').max(200, 'must be at most 200 characters');

export interface NewModel {
  name: string;
  kind: ModelKind;
  baseModelId: string;
}

export async function createModel(db: DataSource, user: User, input: NewModel): Promise<Model> {
  const name = parseInput(modelName, input.name, 'name');
  if (input.kind === ModelKind.META && !isAdmin(user)) throw forbidden('Only administrators create public metamodels');
  const baseModel = await db.getRepository(BaseModel).findOneBy({ id: parseId(input.baseModelId, 'baseModelId') });
  if (!baseModel) throw badInput('baseModelId: no such base model');
  const models = db.getRepository(Model);
  return models.save(
    models.create({
      name,
      kind: input.kind,
      ownerId: input.kind === ModelKind.META ? null : user.id,
      baseModelId: baseModel.id,
      headVersionId: null,
    }),
  );
}

export async function renameModel(db: DataSource, user: User, id: string, name: string): Promise<Model> {
  const model = await getModelToChange(db, user, id);
  model.name = parseInput(modelName, name, 'name');
  return db.getRepository(Model).save(model);
}

/** Deletes the model with its versions, concepts, contributions and instance photos, rows and objects. */
export async function deleteModel(db: DataSource, store: ObjectStore, user: User, id: string): Promise<string> {
  const model = await getModelToChange(db, user, id);
  const objectKeys = await db.transaction(async (tx) => {
    const photos: { objectKey: string }[] = await tx.query(
      'SELECT i."objectKey" FROM instance_image i JOIN concept c ON c.id = i."conceptId" WHERE c."modelId" = $1',
      [model.id],
    );
    const weights = await tx.getRepository(ModelVersion).find({ where: { modelId: model.id }, select: { weightsKey: true } });
    await tx.getRepository(Model).delete(model.id); // the rest cascades
    // A revert's version shares its weights with an older one; a base-weights version has none.
    const weightKeys = new Set(weights.flatMap((v) => (v.weightsKey ? [v.weightsKey] : [])));
    return [...photos.map((p) => p.objectKey), ...weightKeys];
  });
  // After the commit: a failure here leaves unreferenced objects, never rows pointing at nothing.
  for (const key of objectKeys) await store.delete(key);
  return model.id;
}

export function getModelBaseModel(db: DataSource, model: Model): Promise<BaseModel> {
  return db.getRepository(BaseModel).findOneByOrFail({ id: model.baseModelId });
}
