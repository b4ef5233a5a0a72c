import type { EntityManager } from 'typeorm';
import type { JobStatus } from '../entities';
import { enqueueJobWebhookEvents } from './webhooks';

/** The PostgreSQL channel every job's new state is announced on. */
export const JOB_STATES_CHANNEL = 'job_states';

/** A job's state as its subscribers see it: the row and its images as one committed transaction left them. */
export interface JobState {
  jobId: string;
  /** Whose job: the feed of all of a user's jobs (`myJobs`) picks its states by it. */
  ownerId: string;
  status: JobStatus;
  progress: number;
  step: number;
  steps: number;
  loss: number | null;
  error: string | null;
  /** The images made, in order; written only in the transaction that makes the job SUCCEEDED. */
  imageIds: string[];
  /** A fine-tune's latest previews: the step whose weights drew them, and the images in prompt order; null and empty before any. */
  previewStep: number | null;
  previewImageIds: string[];
}

/**
 * The state (a JobState as JSON) of the `job` row in scope. One expression reads the row and its image
 * ids, so both come from one snapshot: read in two queries, a RUNNING row could meet the images of the
 * transaction that finished it in between, a state that never existed.
 */
export const JOB_STATE_JSON = `json_build_object(
  'jobId', job.id, 'ownerId', job."ownerId", 'status', job.status, 'progress', job.progress, 'step', job.step, 'steps', job.steps,
  'loss', job.loss, 'error', job.error,
  'imageIds', ARRAY(SELECT image.id FROM image WHERE image."jobId" = job.id AND image."previewStep" IS NULL ORDER BY image."objectKey"),
  'previewStep', (SELECT max(image."previewStep") FROM image WHERE image."jobId" = job.id),
  'previewImageIds', ARRAY(SELECT image.id FROM image WHERE image."jobId" = job.id
    AND image."previewStep" = (SELECT max(p."previewStep") FROM image p WHERE p."jobId" = job.id) ORDER BY image."objectKey"))`;

/**
 * Announces job `jobId`'s state to every process's subscribers, from inside the transaction `tx` that
 * changed the job, after the change. That placement gives subscribers every state, in order, each one
 * that existed:
 * - the state travels in the notification, so no listener has to read the row again later, when it
 *   may have moved on (and skipped a state);
 * - `tx` holds the job row's lock from its update to its commit, and images are only written under
 *   it (finishJob), so the state read here is exactly what commits;
 * - NOTIFY delivers at commit, and PostgreSQL queues notifications in commit order;
 * - the transaction's id travels too, so a listener can tell whether its own read of the job already
 *   saw this state (JobEvents).
 * The payload fits NOTIFY's 8000 bytes: at most 8 image ids and two more, 4 preview ids (MAX_PREVIEW_PROMPTS), numbers,
 * and a user message of at most 1000 characters (failRunningJob) make under 7200 even with every character JSON-escaped.
 * The job's webhook events, if it has a webhook, go into the outbox in the same transaction, for the
 * same reasons.
 */
export async function publishJobState(tx: EntityManager, jobId: string): Promise<void> {
  if (!tx.queryRunner?.isTransactionActive) throw new Error('publishJobState runs inside the transaction that changed the job');
  const [{ hooked }]: { hooked: boolean }[] = await tx.query(
    `SELECT pg_notify($1, json_build_object('xid', pg_current_xact_id()::text, 'state', ${JOB_STATE_JSON})::text),
            EXISTS (SELECT 1 FROM job_webhook WHERE "jobId" = job.id) AS hooked
       FROM job WHERE job.id = $2`,
    [JOB_STATES_CHANNEL, jobId],
  );
  if (hooked) await enqueueJobWebhookEvents(tx, jobId);
}
