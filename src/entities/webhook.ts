import { GraphQLJSONObject } from 'graphql-scalars';
import { Field, Float, ID, Int, ObjectType, registerEnumType } from 'type-graphql';
import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, OneToOne, PrimaryColumn, PrimaryGeneratedColumn, UpdateDateColumn } from 'typeorm';
import { Job } from './job';
import { User } from './user';

/** What a job's webhook may be told. */
export enum WebhookEvent {
  /** A worker took the job (again, after a requeue). */
  STARTED = 'STARTED',
  /** Steps done, at most as often as the webhook's progress interval. */
  PROGRESS = 'PROGRESS',
  /** One per image made, when the job succeeds. */
  IMAGE = 'IMAGE',
  /** A fine-tune's previews of one training step (its previewPrompts). */
  PREVIEW = 'PREVIEW',
  /** SUCCEEDED, FAILED or CANCELED. */
  COMPLETED = 'COMPLETED',
}
registerEnumType(WebhookEvent, { name: 'WebhookEvent' });

export enum WebhookDeliveryStatus {
  PENDING = 'PENDING',
  DELIVERED = 'DELIVERED',
  /** Every attempt failed; `redeliverWebhook` tries again. */
  FAILED = 'FAILED',
}
registerEnumType(WebhookDeliveryStatus, { name: 'WebhookDeliveryStatus' });

/** Where and how often a webhook hears of a job: a job's own, or its owner's default (stored as JSON). */
@ObjectType()
export class WebhookTarget {
  @Field(() => String)
  url: string;

  @Field(() => [WebhookEvent])
  events: WebhookEvent[];

  @Field(() => Int, { nullable: true, description: 'PROGRESS after at least this many steps since the last one.' })
  progressEverySteps: number | null;

  @Field(() => Float, { nullable: true, description: 'PROGRESS after at least this many seconds since the last one.' })
  progressEverySeconds: number | null;
}

/** A user's signing secret and default webhook (used by jobs submitted without one of their own). */
@ObjectType()
@Entity('webhook_settings')
export class WebhookSettings {
  @PrimaryColumn({ type: 'uuid' })
  userId: string;

  @OneToOne(() => User, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'userId' })
  user?: User;

  /** `whsec_` and base64 of the HMAC key, as Standard Webhooks libraries take it. Kept in clear: signing needs it. */
  @Field(() => String, { description: 'Verifies deliveries (Standard Webhooks: `whsec_` and the base64 HMAC-SHA256 key).' })
  @Column({ type: 'text' })
  secret: string;

  @Field(() => WebhookTarget, { nullable: true, description: 'Used by jobs submitted without a webhook; null: none.' })
  @Column({ type: 'jsonb', nullable: true })
  defaultTarget: WebhookTarget | null;

  @UpdateDateColumn({ type: 'timestamptz' })
  updatedAt: Date;
}

/**
 * A job's webhook, and how far it has been told: the status it last saw and its last PROGRESS, so
 * each state change enqueues the events it means exactly once (services/webhooks.ts).
 */
@Entity('job_webhook')
export class JobWebhook {
  @PrimaryColumn({ type: 'uuid' })
  jobId: string;

  @OneToOne(() => Job, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'jobId' })
  job?: Job;

  @Column({ type: 'jsonb' })
  target: WebhookTarget;

  @Column({ type: 'text', nullable: true })
  lastStatus: string | null;

  @Column({ type: 'integer', default: 0 })
  lastProgressStep: number;

  @Column({ type: 'timestamptz', nullable: true })
  lastProgressAt: Date | null;
}

/**
 * The outbox: one event for one URL, written in the transaction that changed the job, then sent and
 * retried until it is delivered or out of attempts. Its id is the `webhook-id` header of every attempt.
 */
@ObjectType()
@Entity('webhook_delivery')
// The dispatcher's next due deliveries, and a user's log newest first.
@Index(['nextAttemptAt'], { where: `"status" = 'PENDING'` })
@Index(['ownerId', 'createdAt'])
export class WebhookDelivery {
  @Field(() => ID, { description: 'The `webhook-id` header of every attempt: de-duplicate on it.' })
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Column({ type: 'uuid' })
  ownerId: string;

  @ManyToOne(() => User, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'ownerId' })
  owner?: User;

  @Field(() => ID, { nullable: true })
  @Index()
  @Column({ type: 'uuid', nullable: true })
  jobId: string | null;

  @ManyToOne(() => Job, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'jobId' })
  job?: Job;

  @Field(() => String, { description: '`job.started`, `job.progress`, `job.image`, `job.preview` or `job.completed`.' })
  @Column({ type: 'text' })
  type: string;

  @Field(() => String)
  @Column({ type: 'text' })
  url: string;

  /** The exact bytes sent (and signed) on every attempt. */
  @Column({ type: 'text' })
  body: string;

  @Field(() => WebhookDeliveryStatus)
  @Column({ type: 'enum', enum: WebhookDeliveryStatus, enumName: 'webhook_delivery_status', default: WebhookDeliveryStatus.PENDING })
  status: WebhookDeliveryStatus;

  @Field(() => Int)
  @Column({ type: 'integer', default: 0 })
  attempts: number;

  /** When the dispatcher takes it next; while an attempt is on its way, when that attempt counts as lost. */
  @Field(() => Date, { description: 'When the next attempt is due, while PENDING.' })
  @Column({ type: 'timestamptz', default: () => 'now()' })
  nextAttemptAt: Date;

  @Field(() => Date, { nullable: true })
  @Column({ type: 'timestamptz', nullable: true })
  lastAttemptAt: Date | null;

  @Field(() => Int, { nullable: true, description: "The receiver's HTTP status at the last attempt; null when none came." })
  @Column({ type: 'integer', nullable: true })
  responseStatus: number | null;

  @Field(() => String, { nullable: true, description: 'Why the last attempt failed.' })
  @Column({ type: 'text', nullable: true })
  lastError: string | null;

  @Field(() => Date)
  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;

  @Field(() => Date, { nullable: true })
  @Column({ type: 'timestamptz', nullable: true })
  deliveredAt: Date | null;

  @Field(() => GraphQLJSONObject, { description: 'The body as sent.' })
  get payload(): Record<string, unknown> {
    return JSON.parse(this.body) as Record<string, unknown>;
  }
}
