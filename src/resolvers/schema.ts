import { lexicographicSortSchema, printSchema, type GraphQLSchema } from 'graphql';
import { buildSchema } from 'type-graphql';
import { AccountResolver } from './accounts';
import { BaseModelResolver } from './base-models';
import { ConceptResolver } from './concepts';
import { ContributionResolver } from './contributions';
import { HealthResolver } from './health';
import { ImageResolver } from './images';
import { InstanceImageResolver } from './instance-images';
import { JobResolver } from './jobs';
import { ModelResolver } from './models';

/** The executable schema; `schema/schema.graphql` is its printed form. */
export function buildAppSchema(): Promise<GraphQLSchema> {
  return buildSchema({
    resolvers: [
      HealthResolver,
      AccountResolver,
      BaseModelResolver,
      ModelResolver,
      ConceptResolver,
      ContributionResolver,
      InstanceImageResolver,
      JobResolver,
      ImageResolver,
    ],
    // Inputs are validated by the services (zod), next to the rules they serve.
    validate: false,
  });
}

/** SDL in a stable order, so the checked-in file changes only when the API does. */
export function printAppSchema(schema: GraphQLSchema): string {
  return printSchema(lexicographicSortSchema(schema)) + '\n';
}
