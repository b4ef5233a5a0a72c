import { Arg, Ctx, Field, FieldResolver, ID, InputType, Mutation, Query, Resolver, Root } from 'type-graphql';
import { BaseModel, Concept, Model, ModelKind, ModelVersion } from '../../entities';
import { listConcepts } from '../../services/concepts';
import {
  createModel,
  deleteModel,
  getHeadVersion,
  getModel,
  getModelBaseModel,
  listModels,
  renameModel,
} from '../../services/models';
import { listVersions } from '../../services/versions';
import { requireUser } from '../../services/viewer';
import type { Context } from '../context';

@InputType()
class CreateModelInput {
  @Field(() => String)
  name: string;

  @Field(() => ModelKind, { description: 'META (public) models are created by admins only.' })
  kind: ModelKind;

  @Field(() => ID)
  baseModelId: string;
}

@Resolver(() => Model)
export class ModelResolver {
  @Query(() => [Model], { description: 'Your private models and metamodels, and the public metamodels.' })
  models(
    @Arg('kind', () => ModelKind, { nullable: true }) kind: ModelKind | null,
    @Ctx() { viewer, services }: Context,
  ): Promise<Model[]> {
    return listModels(services.db, requireUser(viewer), kind ?? undefined);
  }

  @Query(() => Model)
  model(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<Model> {
    return getModel(services.db, requireUser(viewer), id);
  }

  @Mutation(() => Model)
  createModel(
    @Arg('input', () => CreateModelInput) input: CreateModelInput,
    @Ctx() { viewer, services }: Context,
  ): Promise<Model> {
    return createModel(services.db, requireUser(viewer), { ...input });
  }

  @Mutation(() => Model)
  renameModel(
    @Arg('id', () => ID) id: string,
    @Arg('name', () => String) name: string,
    @Ctx() { viewer, services }: Context,
  ): Promise<Model> {
    return renameModel(services.db, requireUser(viewer), id, name);
  }

  @Mutation(() => ID, { description: 'Deletes the model with its versions, concepts and photos; returns its id.' })
  deleteModel(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<string> {
    return deleteModel(services.db, services.store, requireUser(viewer), id);
  }

  // Field resolvers run only on models the query above already let the viewer see.

  @FieldResolver(() => BaseModel)
  baseModel(@Root() model: Model, @Ctx() { services }: Context): Promise<BaseModel> {
    return getModelBaseModel(services.db, model);
  }

  @FieldResolver(() => ModelVersion, { nullable: true })
  headVersion(@Root() model: Model, @Ctx() { services }: Context): Promise<ModelVersion | null> {
    return getHeadVersion(services.db, model);
  }

  @FieldResolver(() => [ModelVersion], { description: 'Newest first.' })
  versions(@Root() model: Model, @Ctx() { services }: Context): Promise<ModelVersion[]> {
    return listVersions(services.db, model);
  }

  @FieldResolver(() => [Concept])
  concepts(@Root() model: Model, @Ctx() { viewer, services }: Context): Promise<Concept[]> {
    return listConcepts(services.db, requireUser(viewer), model.id);
  }
}
