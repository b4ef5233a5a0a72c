import { Field, FieldResolver, Float, ID, Int, ObjectType, Resolver, Root } from 'type-graphql';
import type { SamplerName } from '../../engine';
import { FineTuneMethod, Job, JobType } from '../../entities';
import { fineTuneParams, type FineTuneParams } from '../../services/finetune';
import type { GenerateParams } from '../../services/jobs';
import type { PreviewSettings } from '../../services/previews';
import { Scheduler } from './jobs';

@ObjectType('PreviewSettings', { description: 'How a fine-tune previews its training.' })
class PreviewSettingsType implements PreviewSettings {
  @Field(() => [String])
  prompts: string[];

  @Field(() => Int, { description: 'Training steps between previews.' })
  every: number;

  @Field(() => Int, { description: 'Denoising steps of each preview.' })
  steps: number;
}

/** A fine-tune job's settings as queued, defaults filled in: the typed view of what the worker reads from `Job.params`. */
@ObjectType({ description: 'What a fine-tune trains, and with what, as queued (defaults filled in).' })
class FineTuneSettings implements FineTuneParams {
  @Field(() => ID)
  modelId: string;

  @Field(() => ID)
  conceptId: string;

  @Field(() => ID)
  contributionId: string;

  @Field(() => FineTuneMethod)
  method: FineTuneMethod;

  @Field(() => Int)
  steps: number;

  @Field(() => Float)
  learningRate: number;

  @Field(() => Int, { nullable: true, description: 'LoRA rank; null for FULL.' })
  rank: number | null;

  @Field(() => Float, { description: 'The seed the training ran with: give it to startFineTune to repeat the run.' })
  seed: number;

  @Field(() => Int)
  batchSize: number;

  @Field(() => Int)
  gradientAccumulation: number;

  @Field(() => Boolean)
  centerCrop: boolean;

  @Field(() => Boolean)
  flip: boolean;

  @Field(() => PreviewSettingsType, { nullable: true, description: 'Null: no previews.' })
  preview: PreviewSettings | null;
}

@ObjectType({ description: 'What a generation draws, as queued (defaults filled in).' })
class GenerationSettings implements Omit<GenerateParams, 'baseModelId'> {
  @Field(() => ID)
  modelId: string;

  @Field(() => ID, { nullable: true, description: 'The model version generated with; null: the base model’s own weights.' })
  versionId: string | null;

  @Field(() => String)
  prompt: string;

  @Field(() => String)
  negativePrompt: string;

  @Field(() => Int)
  steps: number;

  @Field(() => Float)
  guidanceScale: number;

  @Field(() => Scheduler, { nullable: true, description: 'Null: the model’s own.' })
  scheduler: SamplerName | null;

  @Field(() => Float, { description: 'With the same settings, the same images again.' })
  seed: number;

  @Field(() => Int, { nullable: true, description: 'Null: the model’s native size.' })
  width: number | null;

  @Field(() => Int, { nullable: true, description: 'Null: the model’s native size.' })
  height: number | null;

  @Field(() => Int)
  numImages: number;
}

/** Job's typed settings, one field per job type, so clients read them without parsing `params`. */
@Resolver(() => Job)
export class JobSettingsResolver {
  @FieldResolver(() => FineTuneSettings, { nullable: true, description: 'Set on FINETUNE jobs.' })
  fineTune(@Root() job: Job): FineTuneParams | null {
    return job.type === JobType.FINETUNE ? fineTuneParams(job) : null;
  }

  @FieldResolver(() => GenerationSettings, { nullable: true, description: 'Set on GENERATE jobs.' })
  generation(@Root() job: Job): GenerateParams | null {
    return job.type === JobType.GENERATE ? (job.params as unknown as GenerateParams) : null;
  }
}
