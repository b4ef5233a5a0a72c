import { Field, ID, ObjectType, registerEnumType } from 'type-graphql';
import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn, Unique } from 'typeorm';
import { Model } from './model';
import { User } from './user';

export enum ConceptKind {
  OBJECT = 'OBJECT',
  STYLE = 'STYLE',
  FACE = 'FACE',
}
registerEnumType(ConceptKind, { name: 'ConceptKind' });

/** A subject or style taught to a model, invoked in prompts by its identifier token (`sks dog`). */
@ObjectType()
@Entity('concept')
@Unique('concept_token_per_model', ['modelId', 'token'])
export class Concept {
  @Field(() => ID)
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Field(() => String)
  @Column({ type: 'varchar', length: 64 })
  token: string;

  /** The class noun the prompt pairs with the token, e.g. `dog` or `painting`. */
  @Field(() => String)
  @Column({ type: 'varchar', length: 100 })
  category: string;

  @Field(() => ConceptKind)
  @Column({ type: 'enum', enum: ConceptKind, enumName: 'concept_kind' })
  kind: ConceptKind;

  @Field(() => ID)
  @Index()
  @Column({ type: 'uuid' })
  modelId: string;

  @ManyToOne(() => Model, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'modelId' })
  model?: Model;

  @Field(() => ID)
  @Column({ type: 'uuid' })
  contributorId: string;

  @ManyToOne(() => User, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'contributorId' })
  contributor?: User;

  @Field(() => Date)
  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;
}
