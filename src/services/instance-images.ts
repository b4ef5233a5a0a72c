import { createHash, randomUUID } from 'node:crypto';
import sharp from 'sharp';
import type { DataSource } from 'typeorm';
import { InstanceImage, type User } from '../entities';
import type { ObjectStore } from '../storage/object-store';
import { badInput, forbidden, notFound } from './errors';
import { canChangeModel, getModelBaseModel } from './models';
import { getConcept } from './concepts';
import { pageOf, type Page, type PageRequest } from './pagination';
import { parseId } from './validate';
import { basePackInfo } from './versions';
import { admitStorage } from './storage-quota';
import { isAdmin } from './viewer';

const ACCEPTED_FORMATS = new Set(['jpeg', 'png', 'webp']);
/** DreamBooth needs a handful of photos of a concept; more than this is a sign of the wrong tool. */
export const MAX_INSTANCE_IMAGES = 20;

/**
 * Why a photo cannot train a model whose training size is `nativeSize` pixels a side, or undefined:
 * the one rule for photos staged for a fine-tune and photos added to a concept later, so a photo that
 * a metamodel replays for everyone's training can always be used.
 */
export function photoSizeProblem(photo: { width: number; height: number }, nativeSize: number): string | undefined {
  return Math.min(photo.width, photo.height) < nativeSize ? `smaller than ${nativeSize}x${nativeSize}, the model's training size` : undefined;
}

/**
 * Training photos stay private to their uploader, even for a concept of the public metamodel.
 * Listing by concept therefore shows only the caller's own photos (an admin's: everyone's); without a
 * concept, the caller's photos staged for a fine-tune.
 */
export async function listInstanceImages(db: DataSource, user: User, conceptId: string | null, page: PageRequest): Promise<Page<InstanceImage>> {
  const query = db.getRepository(InstanceImage).createQueryBuilder('photo');
  if (conceptId === null) return pageOf(query.where('photo.ownerId = :owner AND photo.conceptId IS NULL', { owner: user.id }), page);
  const concept = await getConcept(db, user, conceptId);
  query.where('photo.conceptId = :conceptId', { conceptId: concept.id });
  if (!isAdmin(user)) query.andWhere('photo.ownerId = :owner', { owner: user.id });
  return pageOf(query, page);
}

export async function getInstanceImage(db: DataSource, user: User, id: string): Promise<InstanceImage> {
  const image = await db.getRepository(InstanceImage).findOneBy({ id: parseId(id) });
  if (!image || (image.ownerId !== user.id && !isAdmin(user))) throw notFound('Instance image');
  return image;
}

/**
 * Stores a photo of a concept the user may teach (one of a model they may change, or a concept they
 * contributed), or without a concept, staged for `startFineTune` to claim. The bytes are kept as
 * uploaded; sharp only reads the format and size. Refused when it would take the user past
 * `storageLimit` bytes in storage.
 */
export async function addInstanceImage(
  db: DataSource,
  store: ObjectStore,
  user: User,
  conceptId: string | null,
  bytes: Uint8Array,
  storageLimit: number,
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
  if (concept) {
    // A staged photo is checked when a fine-tune claims it; one added to a concept, here.
    const { geometry } = await basePackInfo(store, await getModelBaseModel(db, concept.model!));
    const problem = photoSizeProblem({ width: metadata.width, height: metadata.height }, geometry.nativeSize);
    if (problem) throw badInput(`file: the photo is ${problem}`);
    if ((await db.getRepository(InstanceImage).countBy({ conceptId: concept.id })) >= MAX_INSTANCE_IMAGES) {
      throw badInput(`conceptId: the concept has ${MAX_INSTANCE_IMAGES} photos, the most it may have`);
    }
  }
  await admitStorage(db, user.id, storageLimit, bytes.length);
  const objectKey = `instance-images/${user.id}/${randomUUID()}.${metadata.format}`;
  await store.put(objectKey, bytes, `image/${metadata.format}`);
  const repo = db.getRepository(InstanceImage);
  return repo.save(
    repo.create({
      objectKey,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      bytes: bytes.length,
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
