import { Arg, Field, ID, ObjectType, registerEnumType, Resolver, Root, Subscription } from 'type-graphql';
import { ModelEventType, type ModelEvent } from '../../services/model-events';
import { getModel } from '../../services/models';
import { requireUser } from '../../services/viewer';
import type { Context } from '../context';

registerEnumType(ModelEventType, { name: 'ModelEventType' });

@ObjectType({ description: 'Something that happened to a model: a contribution queued, training or failed, a version appended, a revert or withdrawal.' })
class ModelUpdate implements ModelEvent {
  @Field(() => ID)
  modelId: string;

  @Field(() => ModelEventType)
  type: ModelEventType;

  @Field(() => ID, { nullable: true })
  contributionId: string | null;

  @Field(() => ID, { nullable: true, description: 'The new head version (VERSION_APPENDED, REVERTED, WITHDRAWN).' })
  versionId: string | null;

  @Field(() => ID, { nullable: true, description: 'The fine-tune’s job (CONTRIBUTION_QUEUED, TRAINING, CONTRIBUTION_FAILED, VERSION_APPENDED); it is its owner’s to read.' })
  jobId: string | null;

  @Field(() => String, { description: 'When it happened (ISO 8601).' })
  at: string;
}

@Resolver()
export class ModelFeedResolver {
  @Subscription(() => ModelUpdate, {
    description:
      'Every event of a model you see (the public metamodels, your own models) from now on: contributions queued and training, versions appended, '
      + 'reverts and withdrawals. Subscribe, then read the model, to miss nothing. Ends with CONFLICT when events may have been missed (subscribe again).',
    subscribe: async ({ args, context }) => {
      const { viewer, services } = context as Context;
      const model = await getModel(services.db, requireUser(viewer), args.modelId as string);
      return services.events.followModel(model.id);
    },
  })
  modelUpdated(@Root() event: ModelEvent, @Arg('modelId', () => ID) _modelId: string): ModelUpdate {
    return event;
  }
}
