import { GraphQLJSONObject } from 'graphql-scalars';
import { Field, ID, ObjectType, registerEnumType } from 'type-graphql';
import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { Concept } from './concept';
import { Model } from './model';
import { ModelVersion } from './model-version';
import { User } from './user';

export enum ContributionStatus {
  PENDING = 'PENDING',
  TRAINING = 'TRAINING',
  MERGED = 'MERGED',
  FAILED = 'FAILED',
  REVERTED = 'REVERTED',
  /** Its contributor took the concept back out of the metamodel (`withdrawConcept`). */
  WITHDRAWN = 'WITHDRAWN',
}
registerEnumType(ContributionStatus, { name: 'ContributionStatus' });

/** A user's concept being taught to a metamodel; merging it creates a new model version. */
@ObjectType()
@Entity('contribution')
export class Contribution {
  @Field(() => ID)
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Field(() => ID)
  @Index()
  @Column({ type: 'uuid' })
  userId: string;

  @ManyToOne(() => User, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'userId' })
  user?: User;

  @Field(() => ID)
  @Index()
  @Column({ type: 'uuid' })
  modelId: string;

  @ManyToOne(() => Model, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'modelId' })
  model?: Model;

  /** Indexed: every list of a model's concepts looks for withdrawn contributions by concept. */
  @Field(() => ID)
  @Index()
  @Column({ type: 'uuid' })
  conceptId: string;

  @ManyToOne(() => Concept, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'conceptId' })
  concept?: Concept;

  @Field(() => ContributionStatus)
  @Column({ type: 'enum', enum: ContributionStatus, enumName: 'contribution_status', default: ContributionStatus.PENDING })
  status: ContributionStatus;

  @Field(() => ID, { nullable: true })
  @Column({ type: 'uuid', nullable: true })
  resultingVersionId: string | null;

  @ManyToOne(() => ModelVersion, { onDelete: 'SET NULL', nullable: true })
  @JoinColumn({ name: 'resultingVersionId' })
  resultingVersion?: ModelVersion | null;

  /** The prior-preservation split the training used (`{ parts, warnings }`); null until it starts. */
  @Field(() => GraphQLJSONObject, { nullable: true })
  @Column({ type: 'jsonb', nullable: true })
  priorSplit: Record<string, unknown> | null;

  @Field(() => Date)
  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;
}
