import type { DataSource, EntityManager } from 'typeorm';
import { z } from 'zod';
import { JobLoss } from '../entities';
import { parseInput } from './validate';

/** One point of a fine-tune's loss curve. */
export interface LossPoint {
  step: number;
  loss: number;
}

/** Keeps a training step's loss with its job; a step run again (after a requeue) keeps its latest loss. */
export async function recordLoss(tx: EntityManager, jobId: string, step: number, loss: number): Promise<void> {
  await tx.getRepository(JobLoss).upsert({ jobId, step, loss }, ['jobId', 'step']);
}

const points = z.number().int().min(2, 'must be at least 2').max(10_000, 'must be at most 10000');

/**
 * A job's loss at every step, in order; with `maxPoints`, downsampled to at most that many: the steps
 * cut into that many runs of consecutive steps, each the mean of its losses at its last step.
 * The caller has checked that the user sees the job.
 */
export async function lossHistory(db: DataSource, jobId: string, maxPoints: number | null): Promise<LossPoint[]> {
  if (maxPoints == null) {
    return db.getRepository(JobLoss).find({ where: { jobId }, order: { step: 'ASC' }, select: { step: true, loss: true } });
  }
  const buckets = parseInput(points, maxPoints, 'points');
  const rows: { step: number; loss: number }[] = await db.query(
    `SELECT max(step) AS step, avg(loss) AS loss
       FROM (SELECT step, loss, ntile($2) OVER (ORDER BY step) AS bucket FROM job_loss WHERE "jobId" = $1) steps
      GROUP BY bucket ORDER BY step`,
    [jobId, buckets],
  );
  return rows.map((row) => ({ step: Number(row.step), loss: Number(row.loss) }));
}
