import { Arg, Args, Ctx, Field, Float, ID, InputType, Int, Mutation, ObjectType, Query, Resolver } from 'type-graphql';
import { DEFAULT_LORA_RANK } from '../../engine';
import { Concept, ConceptKind, Contribution, FineTuneMethod, Job, Model, ModelKind, ModelVersion } from '../../entities';
import { BATCH_DEFAULTS, getStartedFineTune, startFineTune, TRAINING_DEFAULTS, type StartedFineTune } from '../../services/finetune';
import { DEFAULT_PREVIEW_STEPS, MAX_PREVIEW_IMAGES, MAX_PREVIEW_PROMPTS, MAX_PREVIEW_STEPS } from '../../services/previews';
import { listModelVersions } from '../../services/versions';
import { IDEMPOTENCY_KEY_DESCRIPTION, idempotent } from '../../services/idempotency';
import { requireUser } from '../../services/viewer';
import { ModelVersionConnection, PageArgs, toConnection, type Connection } from '../connections';
import type { Context } from '../context';
import { WebhookInput } from './webhooks';

@InputType()
class StartFineTuneInput {
  @Field(() => ModelKind, { description: 'PRIVATE: a new model of this one subject; PRIVATE_META: your metamodel; META: the public one.' })
  target: ModelKind;

  @Field(() => ID, { nullable: true, description: 'The metamodel to teach (PRIVATE_META or META); leave out to make a new model.' })
  modelId?: string | null;

  @Field(() => ID, { nullable: true, description: 'For a new model: the base model it starts from.' })
  baseModelId?: string | null;

  @Field(() => String, { nullable: true, description: 'For a new model; default the category.' })
  name?: string | null;

  @Field(() => String, { nullable: true, description: 'The rare identifier to use in prompts; one is chosen when left out.' })
  token?: string | null;

  @Field(() => String, { description: 'The class noun, e.g. `dog` or `oil painting`.' })
  category: string;

  @Field(() => ConceptKind)
  kind: ConceptKind;

  @Field(() => [ID], {
    nullable: true,
    description: 'Your staged photos (uploadInstanceImage without conceptId). Photos taught to a metamodel are replayed in the prior-preservation '
      + 'images of every later contribution to it, so what they show shapes the model everyone generates with; the photos themselves stay '
      + 'visible only to you and administrators.',
  })
  instanceImageIds?: string[] | null;

  @Field(() => ID, {
    nullable: true,
    description: 'Train on your photos of this concept again (e.g. one of your private model, to teach it to a metamodel) without uploading them; '
      + 'with instanceImageIds, on both. They are copied: the concepts keep their photos apart.',
  })
  fromConceptId?: string | null;

  @Field(() => Int, {
    nullable: true,
    description: `Training steps, also the number of prior-preservation images; default ${TRAINING_DEFAULTS.LORA.steps.OBJECT} for LORA, `
      + `${TRAINING_DEFAULTS.FULL.steps.OBJECT} for FULL, and for a FACE ${TRAINING_DEFAULTS.LORA.steps.FACE} and ${TRAINING_DEFAULTS.FULL.steps.FACE} `
      + '(faces need more: the original recommends up to 600 for objects and styles, 600 to 1200 for faces).',
  })
  steps?: number | null;

  @Field(() => Float, {
    nullable: true,
    description: `Default ${TRAINING_DEFAULTS.LORA.learningRate} for LORA, ${TRAINING_DEFAULTS.FULL.learningRate} for FULL (1e-6 is the original's recommendation across styles and objects).`,
  })
  learningRate?: number | null;

  @Field(() => FineTuneMethod)
  method: FineTuneMethod;

  @Field(() => Float, {
    nullable: true,
    description: 'Unsigned 32-bit; random when absent (Job.fineTune.seed records it). The same seed, photos, base model and settings train the same weights.',
  })
  seed?: number | null;

  @Field(() => Int, { nullable: true, description: `LoRA rank, default ${DEFAULT_LORA_RANK}.` })
  rank?: number | null;

  @Field(() => Int, {
    nullable: true,
    description: `Instance images per micro-batch, each paired with a prior-preservation image; default ${BATCH_DEFAULTS.batchSize}, at most 8.`,
  })
  batchSize?: number | null;

  @Field(() => Int, {
    nullable: true,
    description: `Micro-batches per step; default ${BATCH_DEFAULTS.gradientAccumulation}, at most 8. A step trains on batchSize x gradientAccumulation `
      + 'instance images (the original: 2 x 2). Computed as one batch of them: the same update as accumulating the micro-batches\' gradients.',
  })
  gradientAccumulation?: number | null;

  @Field(() => Boolean, {
    nullable: true,
    description: 'Train on the center square of each image; by default a random square each time (as diffusers and the original do).',
  })
  centerCrop?: boolean | null;

  @Field(() => Boolean, { nullable: true, description: 'Mirror each image left to right at random; default false.' })
  flip?: boolean | null;

  @Field(() => [String], {
    nullable: true,
    description: `Validation prompts (at most ${MAX_PREVIEW_PROMPTS}) drawn with the weights being trained every previewEvery steps: Job.previews, `
      + 'JobUpdate.previewImageIds and the PREVIEW webhook event. Say `a <token> <category>` with the token you give (or read it from the concept).',
  })
  previewPrompts?: string[] | null;

  @Field(() => Int, {
    nullable: true,
    description: `Training steps between previews; default a quarter of the steps. At most ${MAX_PREVIEW_IMAGES} preview images in all (rounds x prompts).`,
  })
  previewEvery?: number | null;

  @Field(() => Int, { nullable: true, description: `Denoising steps of each preview, 1-${MAX_PREVIEW_STEPS}; default ${DEFAULT_PREVIEW_STEPS}.` })
  previewSteps?: number | null;

  @Field(() => WebhookInput, { nullable: true, description: 'Default: your default webhook, if any (setWebhookDefault).' })
  webhook?: WebhookInput | null;

  @Field(() => String, { nullable: true, description: IDEMPOTENCY_KEY_DESCRIPTION })
  idempotencyKey?: string | null;
}

@ObjectType({ description: 'What startFineTune made: everything a client needs next, without a second query.' })
class StartFineTunePayload implements StartedFineTune {
  @Field(() => Job, { description: 'The queued training; follow it with jobUpdated(jobId).' })
  job: Job;

  @Field(() => Model, { description: 'The model trained: new for PRIVATE, the metamodel named otherwise. Generate with it once the job succeeds.' })
  model: Model;

  @Field(() => Concept, { description: 'What is learned; prompts say `a <token> <category>`.' })
  concept: Concept;

  @Field(() => Contribution, { description: 'The training as part of the model’s history (its status, prior split and resulting version).' })
  contribution: Contribution;
}

@Resolver()
export class FineTuneResolver {
  @Mutation(() => StartFineTunePayload, { description: 'Queues a DreamBooth fine-tune; follow its job with jobUpdated.' })
  startFineTune(
    @Arg('input', () => StartFineTuneInput) input: StartFineTuneInput,
    @Ctx() { viewer, services }: Context,
  ): Promise<StartFineTunePayload> {
    const user = requireUser(viewer);
    const { idempotencyKey, ...request } = input;
    return idempotent(services, user, { key: idempotencyKey, operation: 'startFineTune', request }, {
      create: () => startFineTune(services, user, request),
      idOf: (started) => started.job.id,
      load: (jobId) => getStartedFineTune(services.db, user, jobId),
    });
  }

  @Query(() => ModelVersionConnection, { description: "A model's version history, newest first." })
  async modelVersions(
    @Arg('modelId', () => ID) modelId: string,
    @Args(() => PageArgs) page: PageArgs,
    @Ctx() { viewer, services }: Context,
  ): Promise<Connection<ModelVersion>> {
    return toConnection(await listModelVersions(services.db, requireUser(viewer), modelId, page));
  }
}
