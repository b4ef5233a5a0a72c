import { Field, ID, ObjectType } from 'type-graphql';
import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryGeneratedColumn } from 'typeorm';
import { User } from './user';

/** A user's credential. The secret itself is never stored: only its SHA-256 and a visible prefix. */
@ObjectType()
@Entity('api_key')
export class ApiKey {
  @Field(() => ID)
  @PrimaryGeneratedColumn('uuid')
  id: string;

  @Index()
  @Column({ type: 'uuid' })
  userId: string;

  @ManyToOne(() => User, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'userId' })
  user?: User;

  @Field(() => String)
  @Column({ type: 'varchar', length: 100 })
  name: string;

  /** The start of the key as shown to the user, also the lookup index for authentication. */
  @Field(() => String)
  @Column({ type: 'varchar', length: 32, unique: true })
  prefix: string;

  /** Hex SHA-256 of the whole key. Keys are long random strings, so a fast hash suffices. */
  @Column({ type: 'char', length: 64 })
  secretHash: string;

  @Field(() => Date, { nullable: true })
  @Column({ type: 'timestamptz', nullable: true })
  lastUsedAt: Date | null;

  @Field(() => Date, { nullable: true })
  @Column({ type: 'timestamptz', nullable: true })
  revokedAt: Date | null;

  @Field(() => Boolean)
  get revoked(): boolean {
    return this.revokedAt !== null;
  }

  @Field(() => Date)
  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;
}
