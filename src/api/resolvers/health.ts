import { Ctx, Field, ObjectType, Query, Resolver } from 'type-graphql';
import type { Context } from '../context';

@ObjectType()
class Health {
  @Field(() => Boolean, { description: 'The database answers.' })
  ok: boolean;
}

@Resolver()
export class HealthResolver {
  /** Open to anonymous callers, for load balancers and uptime checks. */
  @Query(() => Health)
  async health(@Ctx() { services }: Context): Promise<Health> {
    const ok = await services.db.query('SELECT 1').then(
      () => true,
      () => false,
    );
    return { ok };
  }
}
