import { Arg, Args, Ctx, Field, FieldResolver, ID, InputType, Mutation, Query, Resolver, Root } from 'type-graphql';
import { BaseModel, Concept, Model, ModelKind, ModelVersion } from '../../entities';
import { createModel, deleteModel, getModel, listModels, renameModel } from '../../services/models';
import { IDEMPOTENCY_KEY_DESCRIPTION, idempotent } from '../../services/idempotency';
import { modelVersionPage } from '../../services/versions';
import { requireUser } from '../../services/viewer';
import { connectionType, CreatedArgs, ModelVersionConnection, PageArgs, toConnection, type Connection } from '../connections';
import type { Context } from '../context';

const ModelConnection = connectionType(Model, 'Model');

@InputType()
class CreateModelInput {
  @Field(() => String)
  name: string;

  @Field(() => ModelKind, { description: 'META (public) models are created by admins only.' })
  kind: ModelKind;

  @Field(() => ID)
  baseModelId: string;

  @Field(() => String, { nullable: true, description: IDEMPOTENCY_KEY_DESCRIPTION })
  idempotencyKey?: string | null;
}

@Resolver(() => Model)
export class ModelResolver {
  @Query(() => ModelConnection, { description: 'Your private models and metamodels, and the public metamodels (an admin’s: all), newest first.' })
  async models(
    @Args(() => PageArgs) page: PageArgs,
    @Args(() => CreatedArgs) created: CreatedArgs,
    @Arg('kind', () => ModelKind, { nullable: true }) kind: ModelKind | null,
    @Arg('baseModelId', () => ID, { nullable: true }) baseModelId: string | null,
    @Arg('ownerId', () => ID, { nullable: true, description: 'One user’s models (admins; others may name only themselves).' }) ownerId: string | null,
    @Ctx() { viewer, services }: Context,
  ): Promise<Connection<Model>> {
    return toConnection(await listModels(services.db, requireUser(viewer), { ...created, kind, baseModelId, ownerId }, page));
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
    const user = requireUser(viewer);
    const { idempotencyKey, ...request } = input;
    return idempotent(
      services,
      user,
      { key: idempotencyKey, operation: 'createModel', request },
      { create: () => createModel(services.db, user, request), idOf: (made) => made.id, load: (id) => getModel(services.db, user, id) },
    );
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
  baseModel(@Root() model: Model, @Ctx() { loaders }: Context): Promise<BaseModel> {
    return loaders.baseModel.load(model.baseModelId);
  }

  @FieldResolver(() => ModelVersion, { nullable: true })
  headVersion(@Root() model: Model, @Ctx() { loaders }: Context): Promise<ModelVersion | null> {
    return model.headVersionId ? loaders.version.load(model.headVersionId) : Promise.resolve(null);
  }

  @FieldResolver(() => ModelVersionConnection, { description: 'The version history, newest first.' })
  async versions(@Root() model: Model, @Args(() => PageArgs) page: PageArgs, @Ctx() { loaders, services }: Context): Promise<Connection<ModelVersion>> {
    // First pages of a list's models load together; a later page is one model's own query.
    return toConnection(page.after == null ? await loaders.versionPages(page.first ?? null).load(model.id) : await modelVersionPage(services.db, model.id, page));
  }

  @FieldResolver(() => [Concept], { description: 'The concepts the model offers (not those whose training failed or was reverted), oldest first.' })
  concepts(@Root() model: Model, @Ctx() { loaders }: Context): Promise<Concept[]> {
    return loaders.conceptsOfModel.load(model.id);
  }
}
