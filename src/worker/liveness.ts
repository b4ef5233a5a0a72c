import type { DataSource } from 'typeorm';
import type { Logger } from 'pino';
import { Job, JobStatus } from '../entities';
import { failRunningJob, LAST_SIGN_OF_LIFE } from '../services/job-lifecycle';

/** What a user reads on a job whose worker died under it (a crash, a kill, a lost machine). */
export const WORKER_STOPPED_MESSAGE = 'The worker running this job stopped';

/**
 * Marks job `jobId` alive every `intervalMs` while this process works on it, whatever the phase (loading
 * weights and generating class images report no steps). Returns what stops beating.
 */
export function keepAlive(db: DataSource, log: Logger, jobId: string, intervalMs: number): () => void {
  const beat = () => {
    db.getRepository(Job)
      .update({ id: jobId, status: JobStatus.RUNNING }, { heartbeatAt: () => 'now()' })
      .catch((error) => log.warn({ err: error, jobId }, 'job heartbeat failed'));
  };
  const timer = setInterval(beat, intervalMs);
  return () => clearInterval(timer);
}

/**
 * Fails the RUNNING jobs whose worker has shown no life for `timeoutSeconds`: their process is gone
 * (a retry claims only QUEUED rows, so nothing else would end them). Any worker may run it, at once.
 */
export async function sweepStalledJobs(db: DataSource, log: Logger, timeoutSeconds: number): Promise<string[]> {
  const stalled = await db
    .getRepository(Job)
    .createQueryBuilder('job')
    .select('job.id')
    .where(`job.status = :running AND ${LAST_SIGN_OF_LIFE} < now() - make_interval(secs => :timeoutSeconds)`, { running: JobStatus.RUNNING, timeoutSeconds })
    .getMany();
  const failed: string[] = [];
  for (const { id } of stalled) {
    if (await failRunningJob(db, id, WORKER_STOPPED_MESSAGE, timeoutSeconds)) failed.push(id);
  }
  if (failed.length) log.warn({ jobIds: failed }, 'failed jobs whose worker stopped');
  return failed;
}
