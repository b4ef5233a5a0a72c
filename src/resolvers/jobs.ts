import { Arg, Ctx, FieldResolver, ID, Mutation, Query, Resolver, Root } from 'type-graphql';
import { Image, Job } from '../entities';
import { listJobImages } from '../services/images';
import { cancelJob, getJob, listJobs } from '../services/jobs';
import { requireUser } from '../services/viewer';
import type { Context } from './context';

@Resolver(() => Job)
export class JobResolver {
  @Query(() => [Job], { description: 'Newest first.' })
  jobs(@Ctx() { viewer, services }: Context): Promise<Job[]> {
    return listJobs(services.db, requireUser(viewer));
  }

  @Query(() => Job)
  job(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<Job> {
    return getJob(services.db, requireUser(viewer), id);
  }

  @Mutation(() => Job, { description: 'Cancels a QUEUED or RUNNING job.' })
  cancelJob(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<Job> {
    return cancelJob(services.db, services.queue, requireUser(viewer), id);
  }

  /** Runs only on jobs the viewer may see, and images share their job's owner. */
  @FieldResolver(() => [Image])
  images(@Root() job: Job, @Ctx() { services }: Context): Promise<Image[]> {
    return listJobImages(services.db, job);
  }
}
