import type { DataSource } from 'typeorm';
import { Contribution, type User } from '../entities';
import { notFound } from './errors';
import { canSeeModel, getModel } from './models';
import { parseId } from './validate';

/**
 * Contributions are visible with their model: everyone signed in sees those to the public metamodel,
 * only the owner those to a private metamodel. Without a model, lists the user's own.
 */
export async function listContributions(db: DataSource, user: User, modelId?: string | null): Promise<Contribution[]> {
  const repo = db.getRepository(Contribution);
  if (modelId == null) return repo.find({ where: { userId: user.id }, order: { createdAt: 'ASC' } });
  const model = await getModel(db, user, modelId);
  return repo.find({ where: { modelId: model.id }, order: { createdAt: 'ASC' } });
}

export async function getContribution(db: DataSource, user: User, id: string): Promise<Contribution> {
  const contribution = await db
    .getRepository(Contribution)
    .findOne({ where: { id: parseId(id) }, relations: { model: true } });
  if (!contribution?.model || !canSeeModel(user, contribution.model)) throw notFound('Contribution');
  return contribution;
}
