import { Field, ID, ObjectType, registerEnumType } from 'type-graphql';
import {
  Check,
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryGeneratedColumn,
  UpdateDateColumn,
} from 'typeorm';
import { BaseModel } from './base-model';
import { User } from './user';
import type { ModelVersion } from './model-version';

export enum ModelKind {
  /** One user's fine-tuned model. */
  PRIVATE = 'PRIVATE',
  /** One user's metamodel: keeps learning concepts without forgetting. */
  PRIVATE_META = 'PRIVATE_META',
  /** The public metamodel every user contributes to; owned by nobody. */
  META = 'META',
}
registerEnumType(ModelKind, { name: 'ModelKind' });

@ObjectType()
@Entity('model')
@Check('model_owner_matches_kind', `("kind" = 'META') = ("ownerId" IS NULL)`)
export class Model {
  @Field(() => ID)
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Field(() => String)
  @Column({ type: 'varchar', length: 200 })
  name: string;

  /** Indexed: every user's `models` list includes the public (META) ones. */
  @Field(() => ModelKind)
  @Index()
  @Column({ type: 'enum', enum: ModelKind, enumName: 'model_kind' })
  kind: ModelKind;

  @Field(() => ID, { nullable: true })
  @Index()
  @Column({ type: 'uuid', nullable: true })
  ownerId: string | null;

  @ManyToOne(() => User, { onDelete: 'CASCADE', nullable: true })
  @JoinColumn({ name: 'ownerId' })
  owner?: User | null;

  @Field(() => ID)
  @Column({ type: 'uuid' })
  baseModelId: string;

  @ManyToOne(() => BaseModel, { onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'baseModelId' })
  baseModel?: BaseModel;

  /** The version generation uses; null until the first fine-tune finishes. */
  @Column({ type: 'uuid', nullable: true })
  headVersionId: string | null;

  @ManyToOne('ModelVersion', { onDelete: 'SET NULL', nullable: true })
  @JoinColumn({ name: 'headVersionId' })
  headVersion?: ModelVersion | null;

  @Field(() => Date)
  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;

  @Field(() => Date)
  @UpdateDateColumn({ type: 'timestamptz' })
  updatedAt: Date;
}
