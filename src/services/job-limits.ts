import type { EntityManager } from 'typeorm';
import type { JobLimits } from '../config';
import { JobStatus, JobType, type User } from '../entities';
import { quotaExceeded, rateLimited } from './errors';

/**
 * Refuses a new job when its user already has `limits.active` jobs queued or running (QUOTA_EXCEEDED:
 * wait or cancel some) or submitted `limits.perMinute` in the last minute (RATE_LIMITED: slow down),
 * or when its `images` would take the images made in the last 24 hours and those on the way (queued
 * or running generations) past `limits.imagesPerDay` (QUOTA_EXCEEDED).
 * Call it in the transaction that inserts the job: it holds a per-user lock until the commit, so
 * concurrent submissions are counted one after another and the limits hold exactly.
 */
export async function admitJob(tx: EntityManager, user: User, limits: JobLimits, images = 0): Promise<void> {
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
  if (images > 0) await admitImages(tx, user, limits, images);
}

async function admitImages(tx: EntityManager, user: User, limits: JobLimits, images: number): Promise<void> {
  const [{ made, coming }] = await tx.query(
    `SELECT (SELECT count(*)::int FROM image JOIN job ON job.id = image."jobId"
              WHERE job."ownerId" = $1 AND image."previewStep" IS NULL AND image."createdAt" > now() - interval '1 day') AS made,
            (SELECT coalesce(sum((params->>'numImages')::int), 0)::int FROM job
              WHERE "ownerId" = $1 AND type = $2 AND status IN ($3, $4)) AS coming`,
    [user.id, JobType.GENERATE, JobStatus.QUEUED, JobStatus.RUNNING],
  );
  if (made + coming + images > limits.imagesPerDay) {
    throw quotaExceeded(
      `You made ${made} images in the last 24 hours and have ${coming} on the way; ${images} more would pass the ${limits.imagesPerDay} a day allowed`,
    );
  }
}
