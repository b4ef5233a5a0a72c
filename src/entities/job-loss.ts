import { Column, Entity, JoinColumn, ManyToOne, PrimaryColumn } from 'typeorm';
import { Job } from './job';

/** One training step's loss of a fine-tune: the series `Job.lossHistory` reads, kept with the job. */
@Entity('job_loss')
export class JobLoss {
  @PrimaryColumn({ type: 'uuid' })
  jobId: string;

  @ManyToOne(() => Job, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'jobId' })
  job?: Job;

  @PrimaryColumn({ type: 'integer' })
  step: number;

  @Column({ type: 'real' })
  loss: number;
}
