import { Column, CreateDateColumn, Entity, Index, JoinColumn, ManyToOne, PrimaryColumn } from 'typeorm';
import { User } from './user';

/**
 * A mutation made with an idempotency key: what it was asked (a hash) and what it made, so a retry
 * with the same key gets the same object until the key expires (services/idempotency.ts).
 */
@Entity('idempotency_key')
export class IdempotencyKey {
  @PrimaryColumn({ type: 'uuid' })
  userId: string;

  @ManyToOne(() => User, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'userId' })
  user?: User;

  @PrimaryColumn({ type: 'varchar', length: 255 })
  key: string;

  /** The mutation, e.g. `generateImages`: one key names one request of one mutation. */
  @Column({ type: 'text' })
  operation: string;

  /** Hex SHA-256 of the request's arguments (an upload's: of its bytes too). */
  @Column({ type: 'char', length: 64 })
  requestHash: string;

  /** The id of the object the request made; null while the request is being made. */
  @Column({ type: 'uuid', nullable: true })
  resultId: string | null;

  @CreateDateColumn({ type: 'timestamptz' })
  createdAt: Date;

  @Index()
  @Column({ type: 'timestamptz' })
  expiresAt: Date;
}
