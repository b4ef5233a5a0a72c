import { Field, Float, ID, Int, ObjectType, registerEnumType } from 'type-graphql';
import { Column, CreateDateColumn, Entity, JoinColumn, ManyToOne, PrimaryGeneratedColumn, Unique } from 'typeorm';
import { BIGINT_AS_NUMBER } from './bigint';
import { Model } from './model';
import type { Contribution } from './contribution';

export enum FineTuneMethod {
  /** Low-rank adapters on the UNet's attention projections. */
  LORA = 'LORA',
  /** Every UNet parameter. */
  FULL = 'FULL',
}
registerEnumType(FineTuneMethod, { name: 'FineTuneMethod' });

/** One immutable state of a model's weights. Rows are only ever inserted; a revert moves the head. */
@ObjectType()
@Entity('model_version')
@Unique('model_version_number', ['modelId', 'number'])
export class ModelVersion {
  @Field(() => ID)
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Field(() => ID)
  @Column({ type: 'uuid' })
  modelId: string;

  @ManyToOne(() => Model, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'modelId' })
  model?: Model;

  /** 1, 2, 3... within the model. */
  @Field(() => Int)
  @Column({ type: 'integer' })
  number: number;

  /** The trained weights (LoRA layers or a whole UNet, by `method`); null: the base model's own. */
  @Column({ type: 'varchar', length: 1024, nullable: true })
  weightsKey: string | null;

  /** The weights object's size (0 for the base model's own), counted against the model owner's storage quota. */
  @Field(() => Float, { description: "Bytes of this version's own weights in storage (0: the base model's)." })
  @Column({ type: 'bigint', default: 0, transformer: BIGINT_AS_NUMBER })
  bytes: number;

  @Field(() => FineTuneMethod)
  @Column({ type: 'enum', enum: FineTuneMethod, enumName: 'fine_tune_method' })
  method: FineTuneMethod;

  @Field(() => ID, { nullable: true })
  @Column({ type: 'uuid', nullable: true })
  parentVersionId: string | null;

  @ManyToOne(() => ModelVersion, { onDelete: 'RESTRICT', nullable: true })
  @JoinColumn({ name: 'parentVersionId' })
  parentVersion?: ModelVersion | null;

  @Field(() => ID, { nullable: true })
  @Column({ type: 'uuid', nullable: true })
  contributionId: string | null;

  @ManyToOne('Contribution', { onDelete: 'SET NULL', nullable: true })
  @JoinColumn({ name: 'contributionId' })
  contribution?: Contribution | null;

  @Field(() => Date)
  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;
}
