import { Arg, Args, Ctx, FieldResolver, ID, Mutation, Query, Resolver, Root } from 'type-graphql';
import { Concept, Contribution, ContributionStatus } from '../../entities';
import { getContribution, listContributions, revertContribution } from '../../services/contributions';
import { requireUser } from '../../services/viewer';
import { connectionType, CreatedArgs, PageArgs, toConnection, type Connection } from '../connections';
import type { Context } from '../context';

const ContributionConnection = connectionType(Contribution, 'Contribution');

@Resolver(() => Contribution)
export class ContributionResolver {
  @Query(() => ContributionConnection, { description: "A model's contributions, or without modelId your own, newest first." })
  async contributions(
    @Args(() => PageArgs) page: PageArgs,
    @Args(() => CreatedArgs) created: CreatedArgs,
    @Arg('modelId', () => ID, { nullable: true }) modelId: string | null,
    @Arg('status', () => ContributionStatus, { nullable: true }) status: ContributionStatus | null,
    @Ctx() { viewer, services }: Context,
  ): Promise<Connection<Contribution>> {
    return toConnection(await listContributions(services.db, requireUser(viewer), { ...created, modelId, status }, page));
  }

  @Query(() => Contribution)
  contribution(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<Contribution> {
    return getContribution(services.db, requireUser(viewer), id);
  }

  @Mutation(() => Contribution, {
    description: 'Appends a version with the weights from before this contribution. Admins on the public metamodel, owners on theirs.',
  })
  revertContribution(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<Contribution> {
    return revertContribution(services.db, requireUser(viewer), id);
  }

  /** Runs only on contributions the viewer may see; the concept is visible with the same model. */
  @FieldResolver(() => Concept)
  concept(@Root() contribution: Contribution, @Ctx() { loaders }: Context): Promise<Concept> {
    return loaders.concept.load(contribution.conceptId);
  }
}
