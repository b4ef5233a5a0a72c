import { Arg, Ctx, FieldResolver, ID, Mutation, Query, Resolver, Root } from 'type-graphql';
import { Image } from '../../entities';
import { deleteImage, getImage, imagePath, listImages } from '../../services/images';
import { requireUser } from '../../services/viewer';
import type { Context } from '../context';

@Resolver(() => Image)
export class ImageResolver {
  @Query(() => [Image], { description: 'Your generated images, newest first.' })
  images(@Ctx() { viewer, services }: Context): Promise<Image[]> {
    return listImages(services.db, requireUser(viewer));
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
