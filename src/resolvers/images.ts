import { Arg, Ctx, ID, Mutation, Query, Resolver } from 'type-graphql';
import { Image } from '../entities';
import { deleteImage, getImage, listImages } from '../services/images';
import { requireUser } from '../services/viewer';
import type { Context } from './context';

@Resolver()
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
}
