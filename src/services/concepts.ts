import type { DataSource } from 'typeorm';
import { z } from 'zod';
import { Concept, ConceptKind, ContributionStatus, type User } from '../entities';
import { conflict, notFound } from './errors';
import { canSeeModel, getModel, getModelToChange } from './models';
import { parseId, parseInput } from './validate';

/**
 * A concept is visible with its model: public metamodels' concepts are public. Listed are those the
 * model offers: not those whose training failed or was reverted.
 */
export async function listConcepts(db: DataSource, user: User, modelId: string): Promise<Concept[]> {
  const model = await getModel(db, user, modelId);
  return db
    .getRepository(Concept)
    .createQueryBuilder('concept')
    .where('concept.modelId = :modelId', { modelId: model.id })
    .andWhere(
      `NOT EXISTS (SELECT 1 FROM contribution c WHERE c."conceptId" = concept.id AND c.status IN (:...withdrawn))`,
      { withdrawn: [ContributionStatus.FAILED, ContributionStatus.REVERTED] },
    )
    .orderBy('concept.createdAt', 'ASC')
    .getMany();
}

export async function getConcept(db: DataSource, user: User, id: string): Promise<Concept> {
  const concept = await db.getRepository(Concept).findOne({ where: { id: parseId(id) }, relations: { model: true } });
  if (!concept?.model || !canSeeModel(user, concept.model)) throw notFound('Concept');
  return concept;
}

const NewConcept = z.object({
  // Identifier tokens go into prompts verbatim: one lower-case word.
  token: z.string().regex(/^[a-z0-9]{1,64}$/, 'must be one lower-case word of letters and digits'),
  category: z.string().trim().min(1, 'must not be empty').max(100),
  kind: z.enum(ConceptKind),
});

export interface NewConcept {
  modelId: string;
  token: string;
  category: string;
  kind: ConceptKind;
}

/** Adds a concept to a model the user may change (public metamodels grow through contributions). */
export async function createConcept(db: DataSource, user: User, input: NewConcept): Promise<Concept> {
  const model = await getModelToChange(db, user, input.modelId, 'modelId');
  const values = parseInput(NewConcept, { token: input.token, category: input.category, kind: input.kind }, 'input');
  const repo = db.getRepository(Concept);
  if (await repo.existsBy({ modelId: model.id, token: values.token })) {
    throw conflict(`The model already has a concept with token "${values.token}"`);
  }
  return repo.save(repo.create({ ...values, modelId: model.id, contributorId: user.id }));
}

export async function deleteConcept(db: DataSource, user: User, id: string): Promise<string> {
  const concept = await getConcept(db, user, id);
  await getModelToChange(db, user, concept.modelId);
  await db.getRepository(Concept).delete(concept.id);
  return concept.id;
}
