import { Arg, Ctx, Field, FieldResolver, Float, ID, Int, Mutation, ObjectType, Query, Resolver, Root } from 'type-graphql';
import { JobType, User, WorkerProcess } from '../../entities';
import { queueStats, setUserDisabled, type QueueStats, type Usage } from '../../services/admin-insight';
import { forbidden } from '../../services/errors';
import { listWorkers } from '../../services/workers';
import { isAdmin, requireAdmin, requireUser } from '../../services/viewer';
import type { Context } from '../context';

@ObjectType({ description: 'One job type’s queue.' })
class JobQueueStats implements QueueStats {
  @Field(() => JobType)
  type: JobType;

  @Field(() => Int)
  queued: number;

  @Field(() => Int)
  running: number;

  @Field(() => Date, { nullable: true, description: 'When the longest-waiting queued job was submitted; null when none waits.' })
  oldestQueuedAt: Date | null;
}

@ObjectType({ description: 'What a user has had the platform do.' })
class UserUsage implements Omit<Usage, 'userId'> {
  @Field(() => Int, { description: 'Jobs a worker started.' })
  jobsRun: number;

  @Field(() => Float, { description: 'Worker time of those jobs, start to finish (to now while running).' })
  computeSeconds: number;

  @Field(() => Int, { description: 'Training steps of fine-tunes that succeeded.' })
  stepsTrained: number;

  @Field(() => Int, { description: 'Generated images (fine-tune previews aside).' })
  imagesMade: number;

  @Field(() => Float, { description: 'Bytes kept in storage: training photos, images (previews included) and model versions’ weights.' })
  storageBytes: number;
}

/** The platform's load and its users, for admins; a user reads their own usage. */
@Resolver(() => User)
export class AdminResolver {
  @Query(() => [JobQueueStats], { description: 'Queue depth and age by job type. Admins only.' })
  queueStats(@Ctx() { viewer, services }: Context): Promise<JobQueueStats[]> {
    requireAdmin(viewer);
    return queueStats(services.db);
  }

  @Query(() => [WorkerProcess], { description: 'The running worker processes: host, pid, device, the jobs each runs and its last heartbeat. Admins only.' })
  workers(@Ctx() { viewer, services }: Context): Promise<WorkerProcess[]> {
    requireAdmin(viewer);
    return listWorkers(services.db);
  }

  @Mutation(() => User, { description: 'Disables an account (its keys are refused at once) or enables it again. Admins only.' })
  setUserDisabled(
    @Arg('id', () => ID) id: string,
    @Arg('disabled', () => Boolean) disabled: boolean,
    @Ctx() { viewer, services }: Context,
  ): Promise<User> {
    return setUserDisabled(services.db, services.keys, requireAdmin(viewer), id, disabled);
  }

  @FieldResolver(() => UserUsage, { description: 'Yours, or anyone’s for an admin.' })
  usage(@Root() user: User, @Ctx() { viewer, loaders }: Context): Promise<UserUsage> {
    const asking = requireUser(viewer);
    if (asking.id !== user.id && !isAdmin(asking)) throw forbidden('Only administrators see others’ usage');
    return loaders.usage.load(user.id);
  }
}
