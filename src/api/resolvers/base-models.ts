import { Arg, Ctx, Field, FieldResolver, ID, InputType, Int, Mutation, Query, Resolver, Root } from 'type-graphql';
import { BaseModel } from '../../entities';
import { getBaseModel, getDefaultBaseModel, listBaseModels, registerBaseModel, setDefaultBaseModel } from '../../services/base-models';
import { basePackInfo } from '../../services/versions';
import { requireAdmin, requireUser } from '../../services/viewer';
import type { Context } from '../context';

@InputType()
class RegisterBaseModelInput {
  @Field(() => String)
  name: string;

  @Field(() => String, { description: 'The key prefix a diffusers pack was uploaded under in the bucket, e.g. base-models/sd15.' })
  storageLocation: string;
}

@Resolver(() => BaseModel)
export class BaseModelResolver {
  @Query(() => [BaseModel])
  baseModels(@Ctx() { viewer, services }: Context): Promise<BaseModel[]> {
    requireUser(viewer);
    return listBaseModels(services.db);
  }

  @Query(() => BaseModel)
  baseModel(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<BaseModel> {
    requireUser(viewer);
    return getBaseModel(services.db, id);
  }

  @Query(() => BaseModel, { description: 'The base model new models start from unless a client picks another.' })
  defaultBaseModel(@Ctx() { viewer, services }: Context): Promise<BaseModel> {
    requireUser(viewer);
    return getDefaultBaseModel(services.db);
  }

  @Mutation(() => BaseModel, { description: 'Admins only. Makes this the default base model (the bundled one until then).' })
  setDefaultBaseModel(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<BaseModel> {
    requireAdmin(viewer);
    return setDefaultBaseModel(services.db, id);
  }

  @Mutation(() => BaseModel, { description: 'Admins only. Loads the pack first and refuses one that does not load.' })
  registerBaseModel(
    @Arg('input', () => RegisterBaseModelInput) input: RegisterBaseModelInput,
    @Ctx() { viewer, services }: Context,
  ): Promise<BaseModel> {
    requireAdmin(viewer);
    return registerBaseModel(services.db, services.store, { ...input });
  }

  @FieldResolver(() => Int, {
    description: 'Pixels a side that images are made and trained at by default; training photos must be at least this large.',
  })
  async resolution(@Root() baseModel: BaseModel, @Ctx() { services }: Context): Promise<number> {
    return (await basePackInfo(services.store, baseModel)).geometry.nativeSize;
  }

  @FieldResolver(() => Int, { description: 'Image sides must be multiples of this and of 8.' })
  async sizeMultiple(@Root() baseModel: BaseModel, @Ctx() { services }: Context): Promise<number> {
    return (await basePackInfo(services.store, baseModel)).geometry.sideMultiple;
  }
}
