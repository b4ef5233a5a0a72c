import type { DataSource } from 'typeorm';
import { JobStatus, JobType, User } from '../entities';
import { announceKeyChange, type KeyCache } from './api-keys';
import { conflict, notFound } from './errors';
import { storedBytesOf } from './storage-quota';
import { parseId } from './validate';

/** What an admin sees of the platform's load and its users' use of it. Callers check for an admin (or the user's own usage). */

/** One job type's queue. */
export interface QueueStats {
  type: JobType;
  queued: number;
  running: number;
  /** When the longest-waiting queued job was submitted; null when none waits. */
  oldestQueuedAt: Date | null;
}

export async function queueStats(db: DataSource): Promise<QueueStats[]> {
  const rows: { type: JobType; queued: number; running: number; oldestQueuedAt: Date | null }[] = await db.query(
    `SELECT t.type,
            (SELECT count(*)::int FROM job WHERE job.type = t.type AND status = $1) AS queued,
            (SELECT count(*)::int FROM job WHERE job.type = t.type AND status = $2) AS running,
            (SELECT min("createdAt") FROM job WHERE job.type = t.type AND status = $1) AS "oldestQueuedAt"
       FROM unnest(enum_range(NULL::job_type)) AS t(type) ORDER BY t.type`,
    [JobStatus.QUEUED, JobStatus.RUNNING],
  );
  return rows;
}

/** What a user has had the platform do. */
export interface Usage {
  userId: string;
  /** Jobs a worker started. */
  jobsRun: number;
  /** Worker time of those jobs, from start to finish (or to now, while running). */
  computeSeconds: number;
  /** Training steps of fine-tunes that succeeded. */
  stepsTrained: number;
  /** Generated images, previews aside. */
  imagesMade: number;
  /** Bytes kept in storage (storage-quota.ts says what counts). */
  storageBytes: number;
}

/** The usage of users by id, in one query. */
export async function usageOf(db: DataSource, userIds: readonly string[]): Promise<Map<string, Usage>> {
  const rows: Omit<Usage, 'storageBytes'>[] = await db.query(
    `SELECT u.id AS "userId",
            count(job.id) FILTER (WHERE job."startedAt" IS NOT NULL)::int AS "jobsRun",
            coalesce(sum(extract(epoch FROM coalesce(job."finishedAt", now()) - job."startedAt")), 0)::float AS "computeSeconds",
            coalesce(sum(job.steps) FILTER (WHERE job.type = $2 AND job.status = $3), 0)::int AS "stepsTrained",
            (SELECT count(*)::int FROM image JOIN job j ON j.id = image."jobId" WHERE j."ownerId" = u.id AND image."previewStep" IS NULL) AS "imagesMade"
       FROM "user" u LEFT JOIN job ON job."ownerId" = u.id
      WHERE u.id = ANY($1) GROUP BY u.id`,
    [[...userIds], JobType.FINETUNE, JobStatus.SUCCEEDED],
  );
  const stored = await storedBytesOf(db, userIds);
  return new Map(rows.map((row) => [row.userId, { ...row, storageBytes: stored.get(row.userId) ?? 0 }]));
}

/**
 * Disables (or enables again) an account: its keys are refused from the next request on, in every
 * process (the change is announced as a key change). An admin cannot disable their own account.
 */
export async function setUserDisabled(db: DataSource, keys: KeyCache, admin: User, id: string, disabled: boolean): Promise<User> {
  const user = await db.getRepository(User).findOneBy({ id: parseId(id) });
  if (!user) throw notFound('User');
  if (user.id === admin.id && disabled) throw conflict('You cannot disable your own account');
  await db.transaction(async (tx) => {
    await tx.getRepository(User).update(user.id, { disabledAt: disabled ? (user.disabledAt ?? new Date()) : null });
    await announceKeyChange(tx, { userId: user.id });
  });
  keys.forget({ userId: user.id }); // this process at once, before the notification comes back
  return db.getRepository(User).findOneByOrFail({ id: user.id });
}
