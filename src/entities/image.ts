import { Field, Float, ID, Int, ObjectType } from 'type-graphql';
import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { BIGINT_AS_NUMBER } from './bigint';
import { Job } from './job';

/** A generated image, or a fine-tune's preview (`previewStep`); it belongs to whoever owns the job that made it. */
@ObjectType()
@Entity('image')
export class Image {
  @Field(() => ID)
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Column({ type: 'varchar', length: 1024 })
  objectKey: string;

  /** Seeds are unsigned 32-bit, beyond GraphQL's Int; a Float holds them exactly. */
  @Field(() => Float)
  @Column({ type: 'bigint', transformer: BIGINT_AS_NUMBER })
  seed: number;

  @Field(() => String)
  @Column({ type: 'text' })
  prompt: string;

  /** Pixels. */
  @Field(() => Int)
  @Column({ type: 'integer' })
  width: number;

  @Field(() => Int)
  @Column({ type: 'integer' })
  height: number;

  /** The PNG's size in storage, counted against its owner's storage quota. */
  @Field(() => Float, { description: 'Bytes in storage (counted against your storage quota).' })
  @Column({ type: 'bigint', default: 0, transformer: BIGINT_AS_NUMBER })
  bytes: number;

  /** Null for a generation's image; for a fine-tune's preview, the training step whose weights drew it. */
  @Field(() => Int, { nullable: true, description: "A fine-tune's preview: the training step whose weights drew it (Job.previews). Null for generated images." })
  @Column({ type: 'integer', nullable: true })
  previewStep: number | null;

  @Field(() => ID)
  @Index()
  @Column({ type: 'uuid' })
  jobId: string;

  @ManyToOne(() => Job, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'jobId' })
  job?: Job;

  @Field(() => Date)
  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;
}
