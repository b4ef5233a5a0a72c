import type { DataSource, EntityManager } from 'typeorm';
import { In } from 'typeorm';
import type { Logger } from 'pino';
import { Contribution, ContributionStatus, Job, JobStatus, JobType } from '../entities';
import { withdrawContribution } from './contributions';
import type { FineTuneParams } from './finetune';
import { publishJobState } from './job-state';
import { recordLoss } from './loss-history';

/**
 * A job's life as its row records it: QUEUED, then RUNNING once a worker claims it, then SUCCEEDED,
 * FAILED or CANCELED; back to QUEUED when its worker stops and hands it back. Every transition is
 * conditional on the status it leaves, so racing writers (a cancel, a sweep, the worker finishing)
 * end in one outcome, and each announces the new state to subscribers from inside the transaction that
 * makes it (publishJobState says why). A fine-tune's contribution follows its job: withdrawn when the
 * job fails or is canceled, PENDING again when it is requeued.
 */

export const FINISHED: readonly JobStatus[] = [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED];
const CANCELABLE = [JobStatus.QUEUED, JobStatus.RUNNING];

/** What a user reads on a job whose worker died under it (a crash, a kill, a lost machine). */
export const WORKER_STOPPED_MESSAGE = 'The worker running this job stopped';

/** When a running job's worker last showed life: its claim or its latest heartbeat (GREATEST skips NULLs). */
const LAST_SIGN_OF_LIFE = 'GREATEST("heartbeatAt", "startedAt")';

/**
 * QUEUED to RUNNING for the worker that got the job from the queue; null when the row is not QUEUED
 * (canceled while queued, or already run by another delivery), and then nothing runs.
 */
export async function claimJob(db: DataSource, jobId: string): Promise<Job | null> {
  return db.transaction(async (tx) => {
    const { affected } = await tx.getRepository(Job).update({ id: jobId, status: JobStatus.QUEUED }, { status: JobStatus.RUNNING, startedAt: new Date() });
    if (!affected) return null;
    await publishJobState(tx, jobId);
    return tx.getRepository(Job).findOneByOrFail({ id: jobId });
  });
}

/** A step done (and a fine-tune's loss, kept in its history too); false when the job is no longer RUNNING, so its worker stops. */
export async function recordJobProgress(
  db: DataSource,
  jobId: string,
  { step, steps, loss }: { step: number; steps: number; loss?: number },
): Promise<boolean> {
  return db.transaction(async (tx) => {
    const { affected } = await tx
      .getRepository(Job)
      .update({ id: jobId, status: JobStatus.RUNNING }, { step, steps, progress: step / steps, ...(loss === undefined ? {} : { loss }) });
    if (!affected) return false;
    if (loss !== undefined) await recordLoss(tx, jobId, step, loss);
    await publishJobState(tx, jobId);
    return true;
  });
}

export async function isJobRunning(db: DataSource, jobId: string): Promise<boolean> {
  return db.getRepository(Job).existsBy({ id: jobId, status: JobStatus.RUNNING });
}

/**
 * RUNNING to SUCCEEDED, together with what `record` writes of the result (images, a new version), in
 * one transaction; false, with nothing written, when the job was canceled or failed meanwhile.
 */
export async function finishJob(db: DataSource, jobId: string, record: (tx: EntityManager) => Promise<void>): Promise<boolean> {
  return db.transaction(async (tx) => {
    const { affected } = await tx
      .getRepository(Job)
      .update({ id: jobId, status: JobStatus.RUNNING }, { status: JobStatus.SUCCEEDED, progress: 1, finishedAt: new Date() });
    if (!affected) return false;
    await record(tx);
    await publishJobState(tx, jobId);
    return true;
  });
}

/** RUNNING back to QUEUED, as if never started, when its worker stops: the queue gives it to another. */
export async function requeueJob(db: DataSource, job: Job): Promise<void> {
  await db.transaction(async (tx) => {
    const { affected } = await tx
      .getRepository(Job)
      .update({ id: job.id, status: JobStatus.RUNNING }, { status: JobStatus.QUEUED, startedAt: null, step: 0, progress: 0, loss: null });
    if (!affected) return;
    if (job.type === JobType.FINETUNE) {
      await tx.getRepository(Contribution).update(fineTuneParams(job).contributionId, { status: ContributionStatus.PENDING });
    }
    await publishJobState(tx, job.id);
  });
}

/** QUEUED or RUNNING to CANCELED; false when the job had already finished. A running job's worker stops at its next step. */
export async function cancelJobRow(db: DataSource, job: Job): Promise<boolean> {
  return db.transaction(async (tx) => {
    const { affected } = await tx
      .getRepository(Job)
      .update({ id: job.id, status: In(CANCELABLE) }, { status: JobStatus.CANCELED, finishedAt: new Date() });
    if (!affected) return false;
    await releaseContribution(tx, job);
    await publishJobState(tx, job.id);
    return true;
  });
}

/** The longest message a failed job keeps, so its state fits in a notification (publishJobState); the log keeps the whole error. */
const MAX_ERROR_LENGTH = 1000;

/**
 * RUNNING to FAILED with `message` (fit for the user; cut to MAX_ERROR_LENGTH). With `staleSeconds`,
 * only if the job's worker has not shown life for that long, so a sweep never fails a job whose worker
 * just beat. False when the job no longer qualifies (finished, canceled, or alive after all).
 */
export async function failRunningJob(db: DataSource, jobId: string, message: string, staleSeconds?: number): Promise<boolean> {
  return db.transaction(async (tx) => {
    const update = tx
      .createQueryBuilder()
      .update(Job)
      .set({ status: JobStatus.FAILED, error: message.slice(0, MAX_ERROR_LENGTH), finishedAt: () => 'now()' })
      .where('id = :jobId AND status = :running', { jobId, running: JobStatus.RUNNING });
    if (staleSeconds !== undefined) update.andWhere(`${LAST_SIGN_OF_LIFE} < now() - make_interval(secs => :staleSeconds)`, { staleSeconds });
    const { affected } = await update.execute();
    if (!affected) return false;
    await releaseContribution(tx, await tx.getRepository(Job).findOneByOrFail({ id: jobId }));
    await publishJobState(tx, jobId);
    return true;
  });
}

/** Marks a RUNNING job's worker alive now, whatever its phase (loading weights and class images report no steps). */
export async function recordHeartbeat(db: DataSource, jobId: string): Promise<void> {
  await db.getRepository(Job).update({ id: jobId, status: JobStatus.RUNNING }, { heartbeatAt: () => 'now()' });
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

/** A fine-tune that will not merge gives its contribution up (see `withdrawContribution`). */
async function releaseContribution(tx: EntityManager, job: Job): Promise<void> {
  if (job.type === JobType.FINETUNE) await withdrawContribution(tx, fineTuneParams(job).contributionId);
}

const fineTuneParams = (job: Job) => job.params as unknown as FineTuneParams;
