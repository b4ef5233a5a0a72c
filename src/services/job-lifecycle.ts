import type { DataSource } from 'typeorm';
import { Job, JobStatus, JobType } from '../entities';
import { withdrawContribution, type FineTuneParams } from './finetune';
import { publishJobEvent } from './job-events';

/**
 * Records a RUNNING job as FAILED with `message` (fit for the user), withdraws a fine-tune's
 * contribution and announces the change, all or nothing. With `staleSeconds`, only if the job's
 * worker has not shown life for that long, so a sweep never fails a job whose worker just beat.
 * False when the job no longer qualifies (finished, canceled, or alive after all).
 */
export async function failRunningJob(db: DataSource, jobId: string, message: string, staleSeconds?: number): Promise<boolean> {
  return db.transaction(async (tx) => {
    const update = tx
      .createQueryBuilder()
      .update(Job)
      .set({ status: JobStatus.FAILED, error: message, finishedAt: () => 'now()' })
      .where('id = :jobId AND status = :running', { jobId, running: JobStatus.RUNNING });
    if (staleSeconds !== undefined) update.andWhere(`${LAST_SIGN_OF_LIFE} < now() - make_interval(secs => :staleSeconds)`, { staleSeconds });
    const { affected } = await update.execute();
    if (!affected) return false;
    const job = await tx.getRepository(Job).findOneByOrFail({ id: jobId });
    if (job.type === JobType.FINETUNE) await withdrawContribution(tx, (job.params as unknown as FineTuneParams).contributionId);
    await publishJobEvent(tx, jobId, 'status');
    return true;
  });
}

/** When a running job's worker last showed life: its claim or its latest heartbeat (GREATEST skips NULLs). */
export const LAST_SIGN_OF_LIFE = 'GREATEST("heartbeatAt", "startedAt")';
