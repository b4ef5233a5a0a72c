import { lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
import { buildSchema, getMetadataStorage, type PubSub } from 'type-graphql';
import { AccountResolver } from './resolvers/accounts';
import { AdminResolver } from './resolvers/admin';
import { BaseModelResolver } from './resolvers/base-models';
import { ConceptResolver } from './resolvers/concepts';
import { ContributionResolver } from './resolvers/contributions';
import { FineTuneResolver } from './resolvers/finetune';
import { HealthResolver } from './resolvers/health';
import { ImageResolver } from './resolvers/images';
import { InstanceImageResolver } from './resolvers/instance-images';
import { JobSettingsResolver } from './resolvers/job-settings';
import { JobResolver, JobUpdateResolver } from './resolvers/jobs';
import { ModelFeedResolver } from './resolvers/model-feed';
import { ModelResolver } from './resolvers/models';
import { WebhookResolver } from './resolvers/webhooks';
import { WeightExportResolver } from './resolvers/weight-exports';

/**
 * type-graphql requires a PubSub once a subscription exists, though ours each bring their own
 * `subscribe` (job events travel through PostgreSQL NOTIFY: services/job-events.ts); topics are refused.
 */
const NO_TOPICS: PubSub = {
  publish: () => {
    throw new Error('subscriptions here bring their own subscribe function');
  },
  subscribe: () => {
    throw new Error('subscriptions here bring their own subscribe function');
  },
};

/** The executable schema; `schema/schema.graphql` is its printed form. */
export function buildAppSchema(): Promise<GraphQLSchema> {
  // type-graphql wraps every plain field (one with no @FieldResolver) in a resolver that runs middlewares and
  // auth checks, which we have none of; graphql-jit reads a field inline only when it has no resolver, and
  // otherwise calls it with a resolve-info and callbacks, for every field of every row. Its "simple resolvers"
  // option leaves plain fields to the default resolver, which reads the property.
  for (const objectType of getMetadataStorage().objectTypes) objectType.simpleResolvers = true;
  return buildSchema({
    resolvers: [
      HealthResolver,
      AccountResolver,
      AdminResolver,
      BaseModelResolver,
      ModelResolver,
      ModelFeedResolver,
      ConceptResolver,
      ContributionResolver,
      FineTuneResolver,
      InstanceImageResolver,
      JobResolver,
      JobUpdateResolver,
      JobSettingsResolver,
      ImageResolver,
      WebhookResolver,
      WeightExportResolver,
    ],
    // Inputs are validated by the services (zod), next to the rules they serve.
    validate: false,
    pubSub: NO_TOPICS,
  });
}

/** SDL in a stable order, so the checked-in file changes only when the API does. */
export function printAppSchema(schema: GraphQLSchema): string {
  return printSchema(lexicographicSortSchema(schema)) + '\n';
}
