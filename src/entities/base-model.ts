import { Field, ID, ObjectType } from 'type-graphql';
import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';

/** A registered pretrained checkpoint (e.g. Stable Diffusion 1.5) that models start from. */
@ObjectType()
@Entity('base_model')
// At most one default: the database keeps the fact, so every API process reports the same one.
@Index('base_model_one_default', ['isDefault'], { unique: true, where: '"isDefault"' })
export class BaseModel {
  @Field(() => ID)
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Field(() => String)
  @Column({ type: 'varchar', length: 200, unique: true })
  name: string;

  /** Where the weights live: an object key in the bucket or a URI the engine understands. */
  @Field(() => String)
  @Column({ type: 'varchar', length: 1024 })
  storageLocation: string;

  /** Architecture family, e.g. `sd15`; the engine picks model code by it. */
  @Field(() => String)
  @Column({ type: 'varchar', length: 64 })
  architecture: string;

  @Field(() => Boolean, { description: 'The base model new models start from unless a client picks another (`defaultBaseModel`).' })
  @Column({ type: 'boolean', default: false })
  isDefault: boolean;

  @Field(() => Date)
  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;
}
