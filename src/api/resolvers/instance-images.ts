import { createHash } from 'node:crypto';
import type { FileUpload } from 'graphql-upload/processRequest.mjs';
import GraphQLUpload from 'graphql-upload/GraphQLUpload.mjs';
import { Arg, Args, Ctx, ID, Mutation, Query, Resolver } from 'type-graphql';
import { InstanceImage } from '../../entities';
import { badInput } from '../../services/errors';
import {
  addInstanceImage,
  deleteInstanceImage,
  getInstanceImage,
  listInstanceImages,
} from '../../services/instance-images';
import { IDEMPOTENCY_KEY_DESCRIPTION, idempotent } from '../../services/idempotency';
import { requireUser } from '../../services/viewer';
import { connectionType, PageArgs, toConnection, type Connection } from '../connections';
import type { Context } from '../context';

const InstanceImageConnection = connectionType(InstanceImage, 'InstanceImage');

@Resolver()
export class InstanceImageResolver {
  @Query(() => InstanceImageConnection, { description: 'Your training photos of a concept; without one, those staged for a fine-tune. Newest first.' })
  async instanceImages(
    @Args(() => PageArgs) page: PageArgs,
    @Arg('conceptId', () => ID, { nullable: true }) conceptId: string | null,
    @Ctx() { viewer, services }: Context,
  ): Promise<Connection<InstanceImage>> {
    return toConnection(await listInstanceImages(services.db, requireUser(viewer), conceptId ?? null, page));
  }

  @Query(() => InstanceImage)
  instanceImage(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<InstanceImage> {
    return getInstanceImage(services.db, requireUser(viewer), id);
  }

  @Mutation(() => InstanceImage, {
    description:
      'A multipart request (GraphQL multipart spec) with a JPEG, PNG or WebP file. Without conceptId the photo is staged for startFineTune.',
  })
  async uploadInstanceImage(
    @Arg('conceptId', () => ID, { nullable: true }) conceptId: string | null,
    @Arg('file', () => GraphQLUpload) file: Promise<FileUpload>,
    @Arg('idempotencyKey', () => String, { nullable: true, description: IDEMPOTENCY_KEY_DESCRIPTION }) idempotencyKey: string | null,
    @Ctx() { viewer, services }: Context,
  ): Promise<InstanceImage> {
    const user = requireUser(viewer);
    const bytes = await readUpload(await file);
    // The same photo again under the same key is a retry; another photo, a new request.
    const request = { conceptId, sha256: createHash('sha256').update(bytes).digest('hex') };
    return idempotent(
      services,
      user,
      { key: idempotencyKey, operation: 'uploadInstanceImage', request },
      { create: () => addInstanceImage(services.db, services.store, user, conceptId ?? null, bytes, services.config.jobLimits.storageBytes), idOf: (made) => made.id, load: (id) => getInstanceImage(services.db, user, id) },
    );
  }

  @Mutation(() => ID)
  deleteInstanceImage(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<string> {
    return deleteInstanceImage(services.db, services.store, requireUser(viewer), id);
  }
}

/** Buffers an upload; the size limit is enforced while streaming (see the upload middleware). */
async function readUpload(upload: FileUpload): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of upload.createReadStream()) chunks.push(chunk as Buffer);
  } catch (error) {
    throw badInput(`file: ${(error as Error).message}`);
  }
  return Buffer.concat(chunks);
}
