import type { DataSource } from 'typeorm';
import { IsNull, Not } from 'typeorm';
import { Image, type User } from '../entities';
import type { ObjectStore } from '../storage/object-store';
import { queryEntities } from '../storage/entity-rows';
import { notFound } from './errors';
import { pageOf, whereCreated, type CreatedFilter, type Page, type PageRequest } from './pagination';
import { parseId } from './validate';
import { isAdmin } from './viewer';

/** A page of the user's generated images (an admin's: everyone's), newest first; images belong to the owner of the job that made them. */
export function listImages(db: DataSource, user: User, filter: CreatedFilter, page: PageRequest): Promise<Page<Image>> {
  const query = whereCreated(db.getRepository(Image).createQueryBuilder('image'), filter).andWhere('image.previewStep IS NULL');
  if (!isAdmin(user)) query.innerJoin('image.job', 'job').andWhere('job.ownerId = :owner', { owner: user.id });
  return pageOf(query, page);
}

/** The images jobs made, each job's in the order it made them, in one query; callers have checked the jobs are visible. */
export function listImagesOfJobs(db: DataSource, jobIds: readonly string[]): Promise<Image[]> {
  return queryEntities(db, Image, 'SELECT * FROM image WHERE "jobId" = ANY($1::uuid[]) AND "previewStep" IS NULL ORDER BY "objectKey"', [jobIds]);
}

/** A fine-tune's previews, by step, each step's in prompt order; the caller has checked the job is visible. */
export function listPreviewsOfJob(db: DataSource, jobId: string): Promise<Image[]> {
  return db.getRepository(Image).find({ where: { jobId, previewStep: Not(IsNull()) }, order: { previewStep: 'ASC', objectKey: 'ASC' } });
}

/** The HTTP route an image downloads from (see api/image-downloads.ts). */
export const imagePath = (id: string): string => `/images/${id}`;

export async function getImage(db: DataSource, user: User, id: string): Promise<Image> {
  const image = await db.getRepository(Image).findOne({ where: { id: parseId(id) }, relations: { job: true } });
  if (!image?.job || (image.job.ownerId !== user.id && !isAdmin(user))) throw notFound('Image');
  return image;
}

export async function deleteImage(db: DataSource, store: ObjectStore, user: User, id: string): Promise<string> {
  const image = await getImage(db, user, id);
  await db.getRepository(Image).delete(image.id);
  await store.delete(image.objectKey);
  return image.id;
}
