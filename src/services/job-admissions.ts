import type { DataSource, EntityManager } from 'typeorm';
import type { JobLimits } from '../config';
import { Job, type JobType, type User, type WebhookTarget } from '../entities';
import type { JobQueue } from './container';
import { quotaExceeded, rateLimited, type AppError } from './errors';
import { storageRefusal, storedBytesToAdd } from './storage-quota';
import { attachJobWebhook, defaultWebhookTarget } from './webhooks';

// A new job is refused when its user already has `limits.active` jobs queued or running (QUOTA_EXCEEDED:
// wait or cancel some) or submitted `limits.perMinute` in the last minute (RATE_LIMITED: slow down),
// or when its `images` would take the images made in the last 24 hours and those on the way (queued
// or running generations) past `limits.imagesPerDay` (QUOTA_EXCEEDED).
// PostgreSQL's job_admissions() (migrations JobAdmissionsInGroups, UsageCounters) reads the user's
// counters, kept by triggers, under a per-user lock held until the commit, so concurrent submissions are
// counted one after another and the limits hold exactly. Its windows are whole buckets: a job counts
// against the minute for 60 to 61 s (by whole seconds), an image against the day for 24 h to 24 h 1 min
// (by whole minutes); the refusals say so.

/** What job_admissions() counted before deciding a job, and which limit refuses it (null: none). */
interface Admission {
  active: number;
  recent: number;
  coming: number;
  made: number;
  refusal: 'ACTIVE' | 'PER_MINUTE' | 'IMAGES_PER_DAY' | null;
}

const ADMISSIONS = 'job_admissions($1, $2::int[], $3, $4, $5)';
const admissionArgs = (user: User, limits: JobLimits, images: number[]) => [user.id, images, limits.active, limits.perMinute, limits.imagesPerDay];

/** Admits one job, or throws, in transaction `tx`, which then inserts the job (with whatever goes with it). */
export async function admitJob(tx: EntityManager, user: User, limits: JobLimits): Promise<void> {
  const [admission]: Admission[] = await tx.query(`SELECT * FROM ${ADMISSIONS}`, admissionArgs(user, limits, [0]));
  const refused = refusalOf(admission, limits, 0);
  if (refused) throw refused;
}

/** A job to admit, insert and queue, with the webhook that will hear of it. */
export interface Submission {
  job: { id: string; type: JobType; params: object; steps: number };
  /** Images it will make: counted against the images allowed a day. */
  images: number;
  /** The bytes its results may take in storage, at most: counted against the user's storage. */
  storageBytes: number;
  /** The webhook it was submitted with; null: its owner's default, if any. */
  webhook: WebhookTarget | null;
}

interface Waiting {
  submission: Submission;
  admitted: (job: Job) => void;
  refused: (error: unknown) => void;
}

/**
 * Admits each user's submissions in groups. A user's admissions are serialized by their lock until each
 * commit is durable (a WAL flush, ~5 ms on the dev VM's disk), so one at a time held a user to about
 * 1 / commit time, whatever the rest cost. Here the submissions that arrive while a user's group commits
 * wait, then go together: one admission statement, one queue statement, one commit. The first of a group
 * are admitted up to the limits, in order of arrival, as if they had come one after another. A lone
 * submission waits for nothing. Per process: groups of different API processes take the lock in turn.
 */
export class JobAdmissions {
  readonly #waiting = new Map<string, Waiting[]>();

  constructor(private readonly services: { db: DataSource; queue: JobQueue; limits: JobLimits }) {}

  /** The job inserted and queued, or the refusal (QUOTA_EXCEEDED, RATE_LIMITED) or failure, thrown. */
  submit(user: User, submission: Submission): Promise<Job> {
    return new Promise((admitted, refused) => {
      const waiting = this.#waiting.get(user.id);
      if (waiting) return void waiting.push({ submission, admitted, refused });
      this.#waiting.set(user.id, [{ submission, admitted, refused }]);
      void this.#admitInGroups(user);
    });
  }

  /** Admits the user's waiting submissions, a group at a time, until none wait. */
  async #admitInGroups(user: User): Promise<void> {
    const waiting = this.#waiting.get(user.id)!;
    while (waiting.length) {
      const group = waiting.splice(0);
      try {
        const outcomes = await this.#admitGroup(user, group.map((w) => w.submission));
        group.forEach((w, i) => (outcomes[i] instanceof Job ? w.admitted(outcomes[i]) : w.refused(outcomes[i])));
      } catch (error) {
        for (const w of group) w.refused(error);
      }
    }
    this.#waiting.delete(user.id);
  }

  /**
   * One transaction: the storage check, which takes the user's lock, then the admissions and inserts in
   * one statement, the admitted jobs' deliveries in another. Each submission's bytes count against the
   * ones after it. Each count is a counter row and its recent changes, or a few bucket rows, whatever the
   * user has made.
   */
  #admitGroup(user: User, submissions: Submission[]): Promise<(Job | AppError)[]> {
    const { db, queue, limits } = this.services;
    return db.transaction(async (tx) => {
      let stored = await storedBytesToAdd(tx, user.id);
      const outcomes: (Job | AppError | undefined)[] = submissions.map((s) => {
        const refused = storageRefusal(stored, s.storageBytes, limits.storageBytes);
        stored += refused ? 0 : s.storageBytes;
        return refused ?? undefined;
      });
      const candidates = submissions.flatMap((s, i) => (outcomes[i] ? [] : [{ s, i }]));
      // Job columns beside the admission's (no name is shared): null where the job was refused.
      const rows: (Admission & Partial<Job>)[] = candidates.length ? await tx.query(
        `WITH admission AS (SELECT * FROM ${ADMISSIONS}),
              submitted AS (SELECT item::int, job FROM jsonb_array_elements($6::jsonb) WITH ORDINALITY AS s(job, item)),
              inserted AS (INSERT INTO job (id, type, "ownerId", params, steps)
                           SELECT (job->>'id')::uuid, (job->>'type')::job_type, $1, job->'params', (job->>'steps')::int
                             FROM submitted JOIN admission USING (item) WHERE refusal IS NULL
                           RETURNING *)
         SELECT admission.*, inserted.*
           FROM admission JOIN submitted USING (item) LEFT JOIN inserted ON inserted.id = (submitted.job->>'id')::uuid
          ORDER BY item`,
        [...admissionArgs(user, limits, candidates.map(({ s }) => s.images)), JSON.stringify(candidates.map(({ s }) => s.job))],
      ) : [];
      rows.forEach((row, n) => {
        const { s, i } = candidates[n];
        outcomes[i] = row.id ? tx.getRepository(Job).create(row) : refusalOf(row, limits, s.images)!;
      });
      const admitted = submissions.filter((_, i) => outcomes[i] instanceof Job);
      for (const type of new Set(admitted.map((s) => s.job.type))) {
        await queue.send(type, admitted.filter((s) => s.job.type === type).map((s) => s.job.id), tx);
      }
      const ownDefault = admitted.some((s) => !s.webhook) ? await defaultWebhookTarget(tx, user.id) : null;
      for (const s of admitted) await attachJobWebhook(tx, s.job.id, user.id, s.webhook ?? ownDefault);
      return outcomes as (Job | AppError)[];
    });
  }
}

function refusalOf({ active, recent, coming, made, refusal }: Admission, limits: JobLimits, images: number): AppError | null {
  if (refusal === 'ACTIVE') {
    return quotaExceeded(`You have ${active} jobs queued or running, the most allowed: wait for some to finish or cancel them`);
  }
  if (refusal === 'PER_MINUTE') return rateLimited(`You started ${recent} jobs in the last minute, the most allowed (a job counts for 60 to 61 seconds, by whole seconds): try again shortly`);
  if (refusal === 'IMAGES_PER_DAY') {
    const counted = made > limits.imagesPerDay ? `more than ${limits.imagesPerDay}` : `${made}`;
    return quotaExceeded(
      `You made ${counted} images in the last 24 hours and have ${coming} on the way; ${images} more would pass the ${limits.imagesPerDay} a day allowed` +
        ' (an image counts for 24 hours to 24 hours and a minute, by whole minutes)',
    );
  }
  return null;
}
