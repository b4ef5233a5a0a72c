import type { DataSource, EntityManager } from 'typeorm';
import { z } from 'zod';
import type { ClipTokenizer } from '../engine';
import { Concept, ConceptKind, ContributionStatus, InstanceImage, Model, type User } from '../entities';
import type { ObjectStore } from '../storage/object-store';
import { queryEntities } from '../storage/entity-rows';
import { notFound } from './errors';
import { checkIdentifier, pickIdentifier } from './identifiers';
import { canSeeModel, getModel, getModelBaseModel, getModelToChange } from './models';
import { parseId, parseInput } from './validate';
import { basePackInfo } from './versions';

/**
 * A concept is visible with its model: public metamodels' concepts are public (their photos are not:
 * see `listInstanceImages`). Listed are those the model offers: not those whose training failed, was
 * reverted or was withdrawn.
 */
export async function listConcepts(db: DataSource, user: User, modelId: string): Promise<Concept[]> {
  return listConceptsOfModels(db, [(await getModel(db, user, modelId)).id]);
}

/** The concepts each model offers, oldest first, in one query; the caller has checked that the user sees the models. */
export function listConceptsOfModels(db: DataSource, modelIds: readonly string[]): Promise<Concept[]> {
  return queryEntities(
    db,
    Concept,
    `SELECT * FROM concept WHERE "modelId" = ANY($1::uuid[])
        AND NOT EXISTS (SELECT 1 FROM contribution c WHERE c."conceptId" = concept.id AND c.status = ANY($2::contribution_status[]))
      ORDER BY "createdAt"`,
    [modelIds, [ContributionStatus.FAILED, ContributionStatus.REVERTED, ContributionStatus.WITHDRAWN]],
  );
}

/** Concepts by id, in one query; the caller has checked that the user sees their models. */
export function getConcepts(db: DataSource, ids: readonly string[]): Promise<Concept[]> {
  return queryEntities(db, Concept, 'SELECT * FROM concept WHERE id = ANY($1::uuid[])', [[...new Set(ids)]]);
}

export async function getConcept(db: DataSource, user: User, id: string): Promise<Concept> {
  const concept = await db.getRepository(Concept).findOne({ where: { id: parseId(id) }, relations: { model: true } });
  if (!concept?.model || !canSeeModel(user, concept.model)) throw notFound('Concept');
  return concept;
}

/** The class noun prompts pair with the token (`a <token> <category>`): lower-case words, nothing to escape. */
export const conceptCategory = z
  .string()
  .trim()
  .toLowerCase()
  .regex(/^[a-z]+( [a-z]+)*$/, 'must be one or more lower-case words, like "dog" or "oil painting"')
  .max(100, 'must be at most 100 characters');

const NewConcept = z.object({ category: conceptCategory, kind: z.enum(ConceptKind) });

export interface NewConcept {
  modelId: string;
  /** A rare identifier; the rarest free one when absent. */
  token?: string | null;
  category: string;
  kind: ConceptKind;
}

/** Adds a concept to a model the user may change (public metamodels grow through contributions). */
export async function createConcept(db: DataSource, store: ObjectStore, user: User, input: NewConcept): Promise<Concept> {
  const model = await getModelToChange(db, user, input.modelId, 'modelId');
  const values = parseInput(NewConcept, { category: input.category, kind: input.kind }, 'input');
  const { tokenizer } = await basePackInfo(store, await getModelBaseModel(db, model));
  return db.transaction(async (tx) => {
    await tx.getRepository(Model).findOneOrFail({ where: { id: model.id }, lock: { mode: 'pessimistic_write' } });
    const token = await identifierFor(tx, tokenizer, model.id, values.category, input.token);
    const repo = tx.getRepository(Concept);
    return repo.save(repo.create({ ...values, token, modelId: model.id, contributorId: user.id }));
  });
}

/**
 * The identifier a new concept of `category` gets on a model: the requested one once checked, else
 * the rarest free one. The caller holds the model row's lock, so no one takes it meanwhile.
 */
export async function identifierFor(
  tx: EntityManager,
  tokenizer: ClipTokenizer,
  modelId: string,
  category: string,
  requested?: string | null,
): Promise<string> {
  const concepts = await tx.getRepository(Concept).find({ where: { modelId }, select: { token: true } });
  const taken = new Set(concepts.map((c) => c.token));
  return requested != null ? checkIdentifier(tokenizer, requested, category, taken) : pickIdentifier(tokenizer, category, taken);
}

/** Deletes a concept of a model the user may change, with its photos, rows and objects. */
export async function deleteConcept(db: DataSource, store: ObjectStore, user: User, id: string): Promise<string> {
  const concept = await getConcept(db, user, id);
  await getModelToChange(db, user, concept.modelId);
  const photos = await db.transaction(async (tx) => {
    const rows = await tx.getRepository(InstanceImage).find({ where: { conceptId: concept.id }, select: { id: true, objectKey: true } });
    await tx.getRepository(Concept).delete(concept.id); // the photos' rows cascade
    return rows;
  });
  // After the commit: a failure here leaves unreferenced objects, never rows pointing at nothing.
  for (const { objectKey } of photos) await store.delete(objectKey);
  return concept.id;
}
