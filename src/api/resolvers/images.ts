import { Arg, Ctx, FieldResolver, ID, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import { Image } from '../../entities';
import { deleteImage, getImage, imagePath, listImages } from '../../services/images';
import { requireUser } from '../../services/viewer';
import { AFTER_DESCRIPTION, connectionType, FIRST_DESCRIPTION, toConnection, type Connection } from '../connections';
import type { Context } from '../context';

const ImageConnection = connectionType(Image, 'Image');

@Resolver(() => Image)
export class ImageResolver {
  @Query(() => ImageConnection, { description: 'Your generated images, newest first.' })
  async images(
    @Arg('first', () => Int, { nullable: true, description: FIRST_DESCRIPTION }) first: number | null,
    @Arg('after', () => String, { nullable: true, description: AFTER_DESCRIPTION }) after: string | null,
    @Ctx() { viewer, services }: Context,
  ): Promise<Connection<Image>> {
    return toConnection(await listImages(services.db, requireUser(viewer), { first, after }));
  }

  @Query(() => Image)
  image(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<Image> {
    return getImage(services.db, requireUser(viewer), id);
  }

  @Mutation(() => ID)
  deleteImage(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<string> {
    return deleteImage(services.db, services.store, requireUser(viewer), id);
  }

  @FieldResolver(() => String, {
    description: 'Where the PNG downloads from, relative to the API origin; send the same Bearer key.',
  })
  url(@Root() image: Image): string {
    return imagePath(image.id);
  }
}
