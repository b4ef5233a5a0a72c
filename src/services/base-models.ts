import type { DataSource } from 'typeorm';
import { z } from 'zod';
import { BaseModel } from '../entities';
import { conflict, notFound } from './errors';
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

const NewBaseModel = z.object({
  name: z.string().trim().min(1, 'must not be empty').max(200),
  storageLocation: z.string().trim().min(1, 'must not be empty').max(1024),
  architecture: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'must be a short lower-case family name like sd15'),
});

export type NewBaseModel = z.input<typeof NewBaseModel>;

export async function registerBaseModel(db: DataSource, input: NewBaseModel): Promise<BaseModel> {
  const values = parseInput(NewBaseModel, input, 'input');
  const repo = db.getRepository(BaseModel);
  if (await repo.existsBy({ name: values.name })) throw conflict('A base model with this name exists');
  return repo.save(repo.create(values));
}
