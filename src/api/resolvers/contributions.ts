import { Arg, Ctx, FieldResolver, ID, Mutation, Query, Resolver, Root } from 'type-graphql';
import { Concept, Contribution } from '../../entities';
import { getContribution, listContributions, revertContribution } from '../../services/contributions';
import { requireUser } from '../../services/viewer';
import type { Context } from '../context';

@Resolver(() => Contribution)
export class ContributionResolver {
  @Query(() => [Contribution], { description: "A model's contributions, or without modelId your own." })
  contributions(
    @Arg('modelId', () => ID, { nullable: true }) modelId: string | null,
    @Ctx() { viewer, services }: Context,
  ): Promise<Contribution[]> {
    return listContributions(services.db, requireUser(viewer), modelId);
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
