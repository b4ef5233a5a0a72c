import { Arg, Args, Ctx, Field, FieldResolver, Float, ID, InputType, Int, Mutation, ObjectType, Query, registerEnumType, Resolver, Root, Subscription } from 'type-graphql';
import { SAMPLER_NAMES, type SamplerName } from '../../engine';
import { Image, Job, JobStatus, JobType } from '../../entities';
import type { JobState } from '../../services/job-state';
import { cancelJob, generateImages, getJob, listJobs } from '../../services/jobs';
import { IDEMPOTENCY_KEY_DESCRIPTION, idempotent } from '../../services/idempotency';
import { listPreviewsOfJob } from '../../services/images';
import { lossHistory } from '../../services/loss-history';
import { requireUser } from '../../services/viewer';
import { connectionType, CreatedArgs, PageArgs, toConnection, type Connection } from '../connections';
import type { Context } from '../context';
import { WebhookInput } from './webhooks';

const JobConnection = connectionType(Job, 'Job');

/** The engine's samplers by their GraphQL names (`dpmpp_2m` is DPMPP_2M); the values are the engine's names. */
export const Scheduler = Object.fromEntries(SAMPLER_NAMES.map((name) => [name.toUpperCase(), name])) as Record<Uppercase<SamplerName>, SamplerName>;
registerEnumType(Scheduler, { name: 'Scheduler' });

@InputType()
class GenerateImagesInput {
  @Field(() => ID)
  modelId: string;

  @Field(() => ID, { nullable: true, description: "Default: the model's head version (its base model before the first fine-tune)." })
  versionId?: string | null;

  @Field(() => String)
  prompt: string;

  @Field(() => String, { nullable: true })
  negativePrompt?: string;

  @Field(() => Int, { nullable: true, description: 'Denoising steps, 1-200; default 30.' })
  steps?: number;

  @Field(() => Float, { nullable: true, description: 'Classifier-free guidance, 0-30; default 7.5 (1 or less: unguided).' })
  guidanceScale?: number;

  @Field(() => Scheduler, { nullable: true, description: "Default: the model's own." })
  scheduler?: SamplerName | null;

  @Field(() => Float, { nullable: true, description: 'Unsigned 32-bit; random when absent. The same seed and settings give the same images.' })
  seed?: number | null;

  @Field(() => Int, { nullable: true, description: "Pixels, a multiple of 8; default the model's native size." })
  width?: number | null;

  @Field(() => Int, { nullable: true })
  height?: number | null;

  @Field(() => Int, { nullable: true, description: '1-8; default 1.' })
  numImages?: number;

  @Field(() => WebhookInput, { nullable: true, description: 'Default: your default webhook, if any (setWebhookDefault).' })
  webhook?: WebhookInput | null;

  @Field(() => String, { nullable: true, description: IDEMPOTENCY_KEY_DESCRIPTION })
  idempotencyKey?: string | null;
}

/** One point of a fine-tune's loss curve. */
@ObjectType()
class LossPoint {
  @Field(() => Int)
  step: number;

  @Field(() => Float)
  loss: number;
}

const QUEUE_POSITION_DESCRIPTION = 'While QUEUED: 1 for the next job of its type to start. As of this read: it moves as jobs ahead start.';
const ESTIMATED_START_DESCRIPTION = 'While QUEUED: from the steps ahead of it and the measured pace of recent jobs of its type; null before any has run.';
const ESTIMATED_FINISH_DESCRIPTION = 'While QUEUED or RUNNING (a running job by its own pace once it has made a step); null without a measured pace.';

/** A job's state as it changes, pushed to subscribers (a JobState, services/job-state.ts). */
@ObjectType()
export class JobUpdate implements JobState {
  @Field(() => ID)
  jobId: string;

  @Field(() => ID)
  ownerId: string;

  @Field(() => JobStatus)
  status: JobStatus;

  @Field(() => Float, { description: '0..1' })
  progress: number;

  @Field(() => Int)
  step: number;

  @Field(() => Int)
  steps: number;

  @Field(() => Float, { nullable: true, description: 'Training loss of fine-tunes; null for generation.' })
  loss: number | null;

  @Field(() => String, { nullable: true })
  error: string | null;

  @Field(() => [ID], { description: 'The images made so far, in order.' })
  imageIds: string[];

  @Field(() => Int, { nullable: true, description: "A fine-tune's latest previews: the training step whose weights drew them; null before any." })
  previewStep: number | null;

  @Field(() => [ID], { description: 'The latest previews (of previewStep), in the order of the fine-tune’s previewPrompts; download each from /images/<id>.' })
  previewImageIds: string[];
}

/**
 * The job's current state, then every state it takes, ending after a finished state. Authorized like
 * the `job` query, before the stream starts, so a refusal is this operation's error, not a broken
 * stream; the stream carries only this job's states.
 */
async function jobUpdates({ viewer, services }: Context, jobId: string): Promise<AsyncIterableIterator<JobState>> {
  const job = await getJob(services.db, requireUser(viewer), jobId);
  return services.events.follow(job.id);
}

@Resolver(() => Job)
export class JobResolver {
  @Query(() => JobConnection, { description: 'Your jobs (an admin’s: everyone’s), newest first.' })
  async jobs(
    @Args(() => PageArgs) page: PageArgs,
    @Args(() => CreatedArgs) created: CreatedArgs,
    @Arg('status', () => JobStatus, { nullable: true }) status: JobStatus | null,
    @Arg('type', () => JobType, { nullable: true }) type: JobType | null,
    @Arg('modelId', () => ID, { nullable: true, description: 'Generations with this model and fine-tunes of it.' }) modelId: string | null,
    @Arg('ownerId', () => ID, { nullable: true, description: 'One user’s jobs (admins; others may name only themselves).' }) ownerId: string | null,
    @Ctx() { viewer, services }: Context,
  ): Promise<Connection<Job>> {
    return toConnection(await listJobs(services.db, requireUser(viewer), { ...created, status, type, modelId, ownerId }, page));
  }

  @Query(() => Job)
  job(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<Job> {
    return getJob(services.db, requireUser(viewer), id);
  }

  @Mutation(() => Job, { description: 'Queues text-to-image generation; follow it with jobUpdated.' })
  generateImages(
    @Arg('input', () => GenerateImagesInput) input: GenerateImagesInput,
    @Ctx() { viewer, services }: Context,
  ): Promise<Job> {
    const user = requireUser(viewer);
    const { idempotencyKey, ...request } = input;
    return idempotent(
      services,
      user,
      { key: idempotencyKey, operation: 'generateImages', request },
      { create: () => generateImages(services, user, request), idOf: (made) => made.id, load: (id) => getJob(services.db, user, id) },
    );
  }

  @Mutation(() => Job, { description: 'Cancels a QUEUED or RUNNING job.' })
  cancelJob(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<Job> {
    return cancelJob(services.db, services.queue, requireUser(viewer), id);
  }

  @Subscription(() => JobUpdate, {
    description: "The job's state now, then on every change until it finishes. Owner or admin.",
    subscribe: ({ args, context }) => jobUpdates(context as Context, args.jobId as string),
  })
  jobUpdated(@Root() update: JobState, @Arg('jobId', () => ID) _jobId: string): JobUpdate {
    return update;
  }

  @Subscription(() => JobUpdate, {
    description:
      'Every state of any of your jobs committed from now on, for a console of everything you run. Subscribe first, then read `jobs`, to miss nothing. Ends with CONFLICT when states may have been missed (subscribe again).',
    subscribe: ({ context }) => {
      const { viewer, services } = context as Context;
      return services.events.followOwner(requireUser(viewer).id);
    },
  })
  myJobs(@Root() update: JobState): JobUpdate {
    return update;
  }

  /** Runs only on jobs the viewer may see, and images share their job's owner. */
  @FieldResolver(() => [Image])
  images(@Root() job: Job, @Ctx() { loaders }: Context): Promise<Image[]> {
    return loaders.imagesOfJob.load(job.id);
  }

  @FieldResolver(() => [Image], { description: "A fine-tune's previews (previewPrompts drawn every previewEvery steps), by step, each step's in prompt order; empty for generation." })
  previews(@Root() job: Job, @Ctx() { services }: Context): Promise<Image[]> {
    return listPreviewsOfJob(services.db, job.id);
  }

  @FieldResolver(() => Int, { nullable: true, description: QUEUE_POSITION_DESCRIPTION })
  async queuePosition(@Root() job: Job, @Ctx() { loaders }: Context): Promise<number | null> {
    return (await loaders.queueEstimate.load(job.id)).queuePosition;
  }

  @FieldResolver(() => Date, { nullable: true, description: ESTIMATED_START_DESCRIPTION })
  async estimatedStartAt(@Root() job: Job, @Ctx() { loaders }: Context): Promise<Date | null> {
    return (await loaders.queueEstimate.load(job.id)).estimatedStartAt;
  }

  @FieldResolver(() => Date, { nullable: true, description: ESTIMATED_FINISH_DESCRIPTION })
  async estimatedFinishAt(@Root() job: Job, @Ctx() { loaders }: Context): Promise<Date | null> {
    return (await loaders.queueEstimate.load(job.id)).estimatedFinishAt;
  }

  @FieldResolver(() => [LossPoint], { description: "A fine-tune's loss at each step, kept after the job ends; empty for generation." })
  lossHistory(
    @Root() job: Job,
    @Arg('points', () => Int, { nullable: true, description: 'At most this many points (2-10000): runs of steps averaged. Default: every step.' }) points: number | null,
    @Ctx() { services }: Context,
  ): Promise<LossPoint[]> {
    return lossHistory(services.db, job.id, points);
  }
}

/** What a job update tells besides the row's state: read when asked for, as of the update. */
@Resolver(() => JobUpdate)
export class JobUpdateResolver {
  @FieldResolver(() => Int, { nullable: true, description: QUEUE_POSITION_DESCRIPTION })
  async queuePosition(@Root() update: JobState, @Ctx() { loaders }: Context): Promise<number | null> {
    return (await loaders.queueEstimate.load(update.jobId)).queuePosition;
  }

  @FieldResolver(() => Date, { nullable: true, description: ESTIMATED_START_DESCRIPTION })
  async estimatedStartAt(@Root() update: JobState, @Ctx() { loaders }: Context): Promise<Date | null> {
    return (await loaders.queueEstimate.load(update.jobId)).estimatedStartAt;
  }

  @FieldResolver(() => Date, { nullable: true, description: ESTIMATED_FINISH_DESCRIPTION })
  async estimatedFinishAt(@Root() update: JobState, @Ctx() { loaders }: Context): Promise<Date | null> {
    return (await loaders.queueEstimate.load(update.jobId)).estimatedFinishAt;
  }
}
