import { Field, Float, ID, Int, ObjectType } from 'type-graphql';
import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { Job } from './job';

/** A generated image; it belongs to whoever owns the job that made it. */
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
  @Column({ type: 'bigint', transformer: { to: (v: number) => v, from: (v: string) => Number(v) } })
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
