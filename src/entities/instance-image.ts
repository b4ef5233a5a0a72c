import { Field, Float, ID, Int, ObjectType } from 'type-graphql';
import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { BIGINT_AS_NUMBER } from './bigint';
import { Concept } from './concept';
import { User } from './user';

/** A training photo of a concept, uploaded by its owner; private even when the concept is public. */
@ObjectType({
  description: 'A training photo. Only its uploader and administrators can see it (there is no download for anyone else, not even of a public '
    + 'metamodel\'s concept). A photo taught to a metamodel is replayed in the prior-preservation images of every later contribution to it, so '
    + 'what it shows shapes the model everyone generates with, until its concept is withdrawn (withdrawConcept).',
})
@Entity('instance_image')
export class InstanceImage {
  @Field(() => ID)
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Column({ type: 'varchar', length: 1024 })
  objectKey: string;

  /** Hex SHA-256 of the stored bytes. */
  @Field(() => String)
  @Column({ type: 'char', length: 64 })
  sha256: string;

  @Field(() => Float, { description: 'Bytes in storage (counted against your storage quota).' })
  @Column({ type: 'bigint', default: 0, transformer: BIGINT_AS_NUMBER })
  bytes: number;

  @Field(() => Int)
  @Column({ type: 'integer' })
  width: number;

  @Field(() => Int)
  @Column({ type: 'integer' })
  height: number;

  @Field(() => ID)
  @Index()
  @Column({ type: 'uuid' })
  ownerId: string;

  @ManyToOne(() => User, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'ownerId' })
  owner?: User;

  /** Null while the photo waits for a fine-tune to claim it. */
  @Field(() => ID, { nullable: true })
  @Index()
  @Column({ type: 'uuid', nullable: true })
  conceptId: string | null;

  @ManyToOne(() => Concept, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'conceptId' })
  concept?: Concept;

  @Field(() => Date)
  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;
}
