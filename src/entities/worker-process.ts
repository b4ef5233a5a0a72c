import { Field, ID, Int, ObjectType } from 'type-graphql';
import { Column, Entity, PrimaryColumn } from 'typeorm';

/**
 * A running worker process, as it reports itself: registered at start, beating while it lives, gone when it
 * stops (or, once silent past the heartbeat timeout, removed by any worker's sweep).
 */
@ObjectType('Worker', { description: 'A running worker process (admins: `workers`).' })
@Entity('worker_process')
export class WorkerProcess {
  @Field(() => ID)
  @PrimaryColumn({ type: 'uuid' })
  id: string;

  @Field(() => String)
  @Column({ type: 'varchar', length: 255 })
  host: string;

  @Field(() => Int)
  @Column({ type: 'integer' })
  pid: number;

  @Field(() => String, { description: 'Where it runs the engine: cpu, cuda or webgpu.' })
  @Column({ type: 'varchar', length: 32 })
  device: string;

  @Field(() => Date)
  @Column({ type: 'timestamptz', default: () => 'now()' })
  startedAt: Date;

  @Field(() => Date)
  @Column({ type: 'timestamptz', default: () => 'now()' })
  lastHeartbeatAt: Date;

  /** The jobs it runs now (one per job type at most). */
  @Field(() => [ID])
  @Column({ type: 'uuid', array: true, default: '{}' })
  currentJobIds: string[];
}
