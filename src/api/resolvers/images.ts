import { Arg, Args, Ctx, FieldResolver, ID, Mutation, Query, Resolver, Root } from 'type-graphql';
import { Image } from '../../entities';
import { deleteImage, getImage, imagePath, listImages } from '../../services/images';
import { requireUser } from '../../services/viewer';
import { connectionType, CreatedArgs, PageArgs, toConnection, type Connection } from '../connections';
import type { Context } from '../context';

const ImageConnection = connectionType(Image, 'Image');

@Resolver(() => Image)
export class ImageResolver {
  @Query(() => ImageConnection, { description: 'Your generated images, newest first.' })
  async images(
    @Args(() => PageArgs) page: PageArgs,
    @Args(() => CreatedArgs) created: CreatedArgs,
    @Ctx() { viewer, services }: Context,
  ): Promise<Connection<Image>> {
    return toConnection(await listImages(services.db, requireUser(viewer), created, page));
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
