import type { DataSource, EntityManager } from 'typeorm';
import { In } from 'typeorm';
import type { Logger } from 'pino';
import { Contribution, ContributionStatus, Job, JobStatus, JobType } from '../entities';
import type { JobQueue } from './container';
import { withdrawContribution } from './contributions';
import type { FineTuneParams } from './finetune';
import { publishJobState } from './job-state';
import { recordLoss } from './loss-history';

/**
 * A job's life as its row records it: QUEUED, then RUNNING once a worker claims it, then SUCCEEDED,
 * FAILED or CANCELED; back to QUEUED when its worker stops and hands it back, or dies (up to a retry
 * limit; a fine-tune then continues from its newest checkpoint). Every transition is
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
 * Which run of a RUNNING job a write is for. A worker names its own claim (`claimedAt`, the `startedAt` its
 * claimJob set), so a worker that lost its job (taken back by a sweep while it could not reach the
 * database, then claimed by another) changes nothing of the new run; a sweep names how long the worker
 * must have been silent (`staleSeconds`), so it never takes a job whose worker just beat.
 */
export type RunCondition = { claimedAt: Date } | { staleSeconds: number };

/** The WHERE clause of `condition` on a job row, with its parameters. */
function runCondition(condition: RunCondition | undefined): [string, Record<string, unknown>] | undefined {
  if (!condition) return undefined;
  return 'claimedAt' in condition
    ? ['"startedAt" = :claimedAt', { claimedAt: condition.claimedAt }]
    : [`${LAST_SIGN_OF_LIFE} < now() - make_interval(secs => :staleSeconds)`, { staleSeconds: condition.staleSeconds }];
}

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

/** A step done (and a fine-tune's loss, kept in its history too); false when the job is no longer RUNNING (as `claimedAt`'s run), so its worker stops. */
export async function recordJobProgress(
  db: DataSource,
  jobId: string,
  { step, steps, loss }: { step: number; steps: number; loss?: number },
  claimedAt?: Date,
): Promise<boolean> {
  return db.transaction(async (tx) => {
    const { affected } = await tx
      .getRepository(Job)
      .update({ id: jobId, status: JobStatus.RUNNING, ...(claimedAt ? { startedAt: claimedAt } : {}) }, { step, steps, progress: step / steps, ...(loss === undefined ? {} : { loss }) });
    if (!affected) return false;
    if (loss !== undefined) await recordLoss(tx, jobId, step, loss);
    await publishJobState(tx, jobId);
    return true;
  });
}

/**
 * Writes what a run made on its way (a fine-tune's previews) with `write`, in a transaction that holds the
 * job row while it is RUNNING as run `claimedAt`, and announces the job's new state; false, with nothing
 * written, when the job is no longer that run's (canceled, taken back).
 */
export async function recordForRun(db: DataSource, jobId: string, claimedAt: Date, write: (tx: EntityManager) => Promise<void>): Promise<boolean> {
  return db.transaction(async (tx) => {
    const running = await tx
      .getRepository(Job)
      .createQueryBuilder('job')
      .setLock('pessimistic_write')
      .where('job.id = :jobId AND job.status = :running AND job.startedAt = :claimedAt', { jobId, running: JobStatus.RUNNING, claimedAt })
      .getExists();
    if (!running) return false;
    await write(tx);
    await publishJobState(tx, jobId);
    return true;
  });
}

export async function isJobRunning(db: DataSource, jobId: string, claimedAt?: Date): Promise<boolean> {
  return db.getRepository(Job).existsBy({ id: jobId, status: JobStatus.RUNNING, ...(claimedAt ? { startedAt: claimedAt } : {}) });
}

/**
 * RUNNING to SUCCEEDED, together with what `record` writes of the result (images, a new version), in
 * one transaction; false, with nothing written, when the job was canceled or failed meanwhile.
 */
export async function finishJob(db: DataSource, jobId: string, record: (tx: EntityManager) => Promise<void>, claimedAt?: Date): Promise<boolean> {
  return db.transaction(async (tx) => {
    const { affected } = await tx
      .getRepository(Job)
      .update({ id: jobId, status: JobStatus.RUNNING, ...(claimedAt ? { startedAt: claimedAt } : {}) }, { status: JobStatus.SUCCEEDED, progress: 1, finishedAt: new Date() });
    if (!affected) return false;
    await record(tx);
    await publishJobState(tx, jobId);
    return true;
  });
}

/**
 * RUNNING back to QUEUED, delivered again in the same transaction, so any worker takes it up (a fine-tune
 * from its newest checkpoint): handed back by the worker of run `claimedAt` (it stops, or a store went
 * away under it), or taken by a sweep from a worker silent for `staleSeconds` (it died), which counts as
 * one of the job's retries. False when the job no longer qualifies (finished, canceled, another run, or
 * alive after all).
 */
export async function requeueJob(db: DataSource, queue: JobQueue, jobId: string, condition: RunCondition): Promise<boolean> {
  return db.transaction(async (tx) => {
    const died = 'staleSeconds' in condition;
    const update = tx
      .createQueryBuilder()
      .update(Job)
      .set({ status: JobStatus.QUEUED, startedAt: null, heartbeatAt: null, step: 0, progress: 0, loss: null, ...(died ? { retries: () => 'retries + 1' } : {}) })
      .where('id = :jobId AND status = :running', { jobId, running: JobStatus.RUNNING })
      .andWhere(...runCondition(condition)!);
    const { affected } = await update.execute();
    if (!affected) return false;
    const job = await tx.getRepository(Job).findOneByOrFail({ id: jobId });
    if (job.type === JobType.FINETUNE) {
      await tx.getRepository(Contribution).update(fineTuneParams(job).contributionId, { status: ContributionStatus.PENDING });
    }
    await queue.requeue(tx, job.type, job.id);
    await publishJobState(tx, job.id);
    return true;
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
 * RUNNING to FAILED with `message` (fit for the user; cut to MAX_ERROR_LENGTH), only as `condition` says
 * when given (see RunCondition). False when the job no longer qualifies (finished, canceled, another run,
 * or alive after all).
 */
export async function failRunningJob(db: DataSource, jobId: string, message: string, condition?: RunCondition): Promise<boolean> {
  return db.transaction(async (tx) => {
    const update = tx
      .createQueryBuilder()
      .update(Job)
      .set({ status: JobStatus.FAILED, error: message.slice(0, MAX_ERROR_LENGTH), finishedAt: () => 'now()' })
      .where('id = :jobId AND status = :running', { jobId, running: JobStatus.RUNNING });
    const only = runCondition(condition);
    if (only) update.andWhere(...only);
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
 * Takes back the RUNNING jobs whose worker has shown no life for `timeoutSeconds`: their process is gone
 * (a delivery claims only QUEUED rows, so nothing else would end them). Each is requeued, or failed once
 * it has been requeued `maxRetries` times. Any worker may run it, at once.
 */
export async function sweepStalledJobs(
  db: DataSource, queue: JobQueue, log: Logger, { timeoutSeconds, maxRetries }: { timeoutSeconds: number; maxRetries: number },
): Promise<{ requeued: string[]; failed: string[] }> {
  const stalled = await db
    .getRepository(Job)
    .createQueryBuilder('job')
    .select(['job.id', 'job.retries'])
    .where(`job.status = :running AND ${LAST_SIGN_OF_LIFE} < now() - make_interval(secs => :timeoutSeconds)`, { running: JobStatus.RUNNING, timeoutSeconds })
    .getMany();
  const requeued: string[] = [];
  const failed: string[] = [];
  for (const { id, retries } of stalled) {
    if (retries < maxRetries) {
      if (await requeueJob(db, queue, id, { staleSeconds: timeoutSeconds })) requeued.push(id);
    } else if (await failRunningJob(db, id, WORKER_STOPPED_MESSAGE, { staleSeconds: timeoutSeconds })) {
      failed.push(id);
    }
  }
  if (requeued.length) log.warn({ jobIds: requeued }, 'requeued jobs whose worker stopped');
  if (failed.length) log.warn({ jobIds: failed, maxRetries }, 'failed jobs whose worker stopped, out of retries');
  return { requeued, failed };
}

/** Of `jobIds`, those no longer queued or running (finished, or gone): nothing will resume them. */
export async function endedJobs(db: DataSource, jobIds: string[]): Promise<string[]> {
  if (jobIds.length === 0) return [];
  const active = await db.getRepository(Job).find({ select: { id: true }, where: { id: In(jobIds), status: In(CANCELABLE) } });
  const live = new Set(active.map((job) => job.id));
  return jobIds.filter((id) => !live.has(id));
}

/** A fine-tune that will not merge gives its contribution up (see `withdrawContribution`). */
async function releaseContribution(tx: EntityManager, job: Job): Promise<void> {
  if (job.type === JobType.FINETUNE) await withdrawContribution(tx, fineTuneParams(job).contributionId, job.id);
}

const fineTuneParams = (job: Job) => job.params as unknown as FineTuneParams;
