import type { EntityManager } from 'typeorm';
import type { JobLimits } from '../config';
import { JobStatus, type User } from '../entities';
import { quotaExceeded, rateLimited } from './errors';

/**
 * Refuses a new job when its user already has `limits.active` jobs queued or running (QUOTA_EXCEEDED:
 * wait or cancel some) or submitted `limits.perMinute` in the last minute (RATE_LIMITED: slow down).
 * Call it in the transaction that inserts the job: it holds a per-user lock until the commit, so
 * concurrent submissions are counted one after another and the limits hold exactly.
 */
export async function admitJob(tx: EntityManager, user: User, limits: JobLimits): Promise<void> {
  await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended('bigdiffusion:jobs-of:' || $1, 0))`, [user.id]);
  const [{ active, recent }] = await tx.query(
    `SELECT count(*) FILTER (WHERE status IN ($2, $3))::int AS active,
            count(*) FILTER (WHERE "createdAt" > now() - interval '1 minute')::int AS recent
       FROM job WHERE "ownerId" = $1 AND (status IN ($2, $3) OR "createdAt" > now() - interval '1 minute')`,
    [user.id, JobStatus.QUEUED, JobStatus.RUNNING],
  );
  if (active >= limits.active) {
    throw quotaExceeded(`You have ${active} jobs queued or running, the most allowed: wait for some to finish or cancel them`);
  }
  if (recent >= limits.perMinute) throw rateLimited(`You started ${recent} jobs in the last minute, the most allowed: try again shortly`);
}
