import { Arg, Ctx, Field, ID, InputType, Mutation, Query, Resolver } from 'type-graphql';
import { Concept, ConceptKind, Contribution } from '../../entities';
import { createConcept, deleteConcept, getConcept, listConcepts } from '../../services/concepts';
import { withdrawConcept } from '../../services/contributions';
import { requireUser } from '../../services/viewer';
import type { Context } from '../context';

@InputType()
class CreateConceptInput {
  @Field(() => ID)
  modelId: string;

  @Field(() => String, {
    nullable: true,
    description: "The identifier used in prompts, e.g. `sks`: one token of the base model's tokenizer, not a common word. Chosen when left out.",
  })
  token?: string | null;

  @Field(() => String, { description: 'The class noun, e.g. `dog`.' })
  category: string;

  @Field(() => ConceptKind)
  kind: ConceptKind;
}

@Resolver()
export class ConceptResolver {
  @Query(() => [Concept])
  concepts(@Arg('modelId', () => ID) modelId: string, @Ctx() { viewer, services }: Context): Promise<Concept[]> {
    return listConcepts(services.db, requireUser(viewer), modelId);
  }

  @Query(() => Concept)
  concept(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<Concept> {
    return getConcept(services.db, requireUser(viewer), id);
  }

  @Mutation(() => Concept, { description: 'On a model you own.' })
  createConcept(
    @Arg('input', () => CreateConceptInput) input: CreateConceptInput,
    @Ctx() { viewer, services }: Context,
  ): Promise<Concept> {
    return createConcept(services.db, services.store, requireUser(viewer), { ...input });
  }

  @Mutation(() => Contribution, {
    description: 'Takes a concept you taught to a metamodel back out: a new version without it (the weights from before it when it was the latest '
      + 'contribution; otherwise later contributions keep theirs), it is no longer listed, and its photos are deleted, so no later training '
      + 'replays them. Its contributor (or an administrator) only. Returns its contribution, now WITHDRAWN.',
  })
  withdrawConcept(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<Contribution> {
    return withdrawConcept(services.db, services.store, requireUser(viewer), id);
  }

  @Mutation(() => ID)
  deleteConcept(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<string> {
    return deleteConcept(services.db, services.store, requireUser(viewer), id);
  }
}
