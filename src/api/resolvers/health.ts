import { Ctx, Field, ObjectType, Query, Resolver } from 'type-graphql';
import { checkServices } from '../../services/availability';
import type { Context } from '../context';

@ObjectType()
class Health {
  @Field(() => Boolean, { description: 'Both stores answer: requests can be served.' })
  ok: boolean;

  @Field(() => Boolean, { description: 'PostgreSQL answers.' })
  database: boolean;

  @Field(() => Boolean, { description: 'The object store (S3) answers.' })
  objectStore: boolean;
}

@Resolver()
export class HealthResolver {
  /** Open to anonymous callers, for load balancers and uptime checks. */
  @Query(() => Health)
  async health(@Ctx() { services }: Context): Promise<Health> {
    const { database, objectStore } = await checkServices(services);
    return { ok: database && objectStore, database, objectStore };
  }
}
