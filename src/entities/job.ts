import { GraphQLJSONObject } from 'graphql-scalars';
import { Field, Float, ID, Int, ObjectType, registerEnumType } from 'type-graphql';
import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { User } from './user';

export enum JobType {
  FINETUNE = 'FINETUNE',
  GENERATE = 'GENERATE',
}
registerEnumType(JobType, { name: 'JobType' });

export enum JobStatus {
  QUEUED = 'QUEUED',
  RUNNING = 'RUNNING',
  SUCCEEDED = 'SUCCEEDED',
  FAILED = 'FAILED',
  CANCELED = 'CANCELED',
}
registerEnumType(JobStatus, { name: 'JobStatus' });

/** A unit of GPU/CPU work a worker runs; the row is the user-facing record, pg-boss carries delivery. */
@ObjectType()
@Entity('job')
// A user's jobs newest first (the `jobs` list, ordered by createdAt then id: jobs made in one statement
// share createdAt), and their active jobs (the queue limit).
@Index(['ownerId', 'createdAt', 'id'])
@Index(['ownerId', 'status'])
// The queue in order (queue positions), and each type's recent finished runs (their measured pace).
@Index(['type', 'status', 'createdAt'])
@Index(['type', 'status', 'finishedAt'])
export class Job {
  @Field(() => ID)
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Field(() => JobType)
  @Column({ type: 'enum', enum: JobType, enumName: 'job_type' })
  type: JobType;

  @Field(() => JobStatus)
  @Column({ type: 'enum', enum: JobStatus, enumName: 'job_status', default: JobStatus.QUEUED })
  status: JobStatus;

  /** The request as the worker runs it (FineTuneParams, GenerateParams); the API shows it typed as Job.fineTune and Job.generation. */
  @Field(() => GraphQLJSONObject, { deprecationReason: 'Read the typed fineTune or generation.' })
  @Column({ type: 'jsonb', default: {} })
  params: Record<string, unknown>;

  /** 0..1 */
  @Field(() => Float)
  @Column({ type: 'real', default: 0 })
  progress: number;

  /** Steps done of `steps` (denoising steps for generation, training steps for a fine-tune). */
  @Field(() => Int)
  @Column({ type: 'integer', default: 0 })
  step: number;

  /** 0 until the worker knows the count. */
  @Field(() => Int)
  @Column({ type: 'integer', default: 0 })
  steps: number;

  /** The latest training loss; null for generation. */
  @Field(() => Float, { nullable: true })
  @Column({ type: 'real', nullable: true })
  loss: number | null;

  /** A message fit for the user; internals go to the log. */
  @Field(() => String, { nullable: true })
  @Column({ type: 'text', nullable: true })
  error: string | null;

  /** Why a fine-tune trains on a worse split than intended (e.g. too few prior images for every part). */
  @Field(() => [String])
  @Column({ type: 'text', array: true, default: '{}' })
  warnings: string[];

  @Field(() => ID)
  @Column({ type: 'uuid' })
  ownerId: string;

  @ManyToOne(() => User, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'ownerId' })
  owner?: User;

  @Field(() => Date)
  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;

  @Field(() => Date, { nullable: true })
  @Column({ type: 'timestamptz', nullable: true })
  startedAt: Date | null;

  @Field(() => Date, { nullable: true })
  @Column({ type: 'timestamptz', nullable: true })
  finishedAt: Date | null;

  /** The running worker's latest sign of life; a sweep requeues (or fails) RUNNING jobs whose worker went quiet. */
  @Column({ type: 'timestamptz', nullable: true })
  heartbeatAt: Date | null;

  /** Times the job was requeued because its worker died; past JOB_MAX_RETRIES it fails instead. */
  @Column({ type: 'integer', default: 0 })
  retries: number;
}
