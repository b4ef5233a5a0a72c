import { createHash, randomUUID } from 'node:crypto';
import sharp from 'sharp';
import type { DataSource } from 'typeorm';
import { IsNull } from 'typeorm';
import { InstanceImage, type User } from '../entities';
import type { ObjectStore } from '../storage/object-store';
import { badInput, forbidden, notFound } from './errors';
import { canChangeModel } from './models';
import { getConcept } from './concepts';
import { parseId } from './validate';
import { isAdmin } from './viewer';

const ACCEPTED_FORMATS = new Set(['jpeg', 'png', 'webp']);

/**
 * Training photos stay private to their uploader, even for a concept of the public metamodel.
 * Listing by concept therefore shows only the caller's own photos (an admin's: everyone's); without a
 * concept, the caller's photos staged for a fine-tune.
 */
export async function listInstanceImages(db: DataSource, user: User, conceptId: string | null): Promise<InstanceImage[]> {
  if (conceptId === null) {
    return db.getRepository(InstanceImage).find({ where: { ownerId: user.id, conceptId: IsNull() }, order: { createdAt: 'ASC' } });
  }
  const concept = await getConcept(db, user, conceptId);
  return db.getRepository(InstanceImage).find({
    where: isAdmin(user) ? { conceptId: concept.id } : { conceptId: concept.id, ownerId: user.id },
    order: { createdAt: 'ASC' },
  });
}

export async function getInstanceImage(db: DataSource, user: User, id: string): Promise<InstanceImage> {
  const image = await db.getRepository(InstanceImage).findOneBy({ id: parseId(id) });
  if (!image || (image.ownerId !== user.id && !isAdmin(user))) throw notFound('Instance image');
  return image;
}

/**
 * Stores a photo of a concept the user may teach (one of a model they may change, or a concept they
 * contributed), or without a concept, staged for `startFineTune` to claim. The bytes are kept as
 * uploaded; sharp only reads the format and size.
 */
export async function addInstanceImage(
  db: DataSource,
  store: ObjectStore,
  user: User,
  conceptId: string | null,
  bytes: Uint8Array,
): Promise<InstanceImage> {
  const concept = conceptId === null ? null : await getConcept(db, user, conceptId);
  if (concept && !canChangeModel(user, concept.model!) && concept.contributorId !== user.id) {
    throw forbidden('Only the concept’s model owner or contributor may add images');
  }
  const metadata = await sharp(bytes)
    .metadata()
    .catch(() => undefined);
  if (!metadata?.format || !ACCEPTED_FORMATS.has(metadata.format) || !metadata.width || !metadata.height) {
    throw badInput('file: must be a JPEG, PNG or WebP image');
  }
  const objectKey = `instance-images/${user.id}/${randomUUID()}.${metadata.format}`;
  await store.put(objectKey, bytes, `image/${metadata.format}`);
  const repo = db.getRepository(InstanceImage);
  return repo.save(
    repo.create({
      objectKey,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      width: metadata.width,
      height: metadata.height,
      ownerId: user.id,
      conceptId: concept?.id ?? null,
    }),
  );
}

export async function deleteInstanceImage(db: DataSource, store: ObjectStore, user: User, id: string): Promise<string> {
  const image = await getInstanceImage(db, user, id);
  await db.getRepository(InstanceImage).delete(image.id);
  await store.delete(image.objectKey);
  return image.id;
}
