import type { EntityManager } from 'typeorm';
import type { JobLimits } from '../config';
import { Job, type JobType, type User } from '../entities';
import { quotaExceeded, rateLimited } from './errors';

// A new job is refused when its user already has `limits.active` jobs queued or running (QUOTA_EXCEEDED:
// wait or cancel some) or submitted `limits.perMinute` in the last minute (RATE_LIMITED: slow down),
// or when its `images` would take the images made in the last 24 hours and those on the way (queued
// or running generations) past `limits.imagesPerDay` (QUOTA_EXCEEDED).
// PostgreSQL's job_admission() (migration JobAdmission) counts under a per-user lock held until the
// commit, so concurrent submissions are counted one after another and the limits hold exactly.

/** What job_admission() counted, and which limit refuses the job (null: none). */
interface Admission {
  active: number;
  recent: number;
  coming: number;
  made: number;
  refusal: 'ACTIVE' | 'PER_MINUTE' | 'IMAGES_PER_DAY' | null;
}

const admissionArgs = (user: User, limits: JobLimits, images: number) => [user.id, images, limits.active, limits.perMinute, limits.imagesPerDay];

/** Admits a job, or throws, in transaction `tx`, which then inserts the job (with whatever goes with it). */
export async function admitJob(tx: EntityManager, user: User, limits: JobLimits, images = 0): Promise<void> {
  const [admission]: Admission[] = await tx.query('SELECT * FROM job_admission($1, $2, $3, $4, $5)', admissionArgs(user, limits, images));
  throwIfRefused(admission, limits, images);
}

/**
 * Inserts a job if its user's limits admit it, or throws, in one statement: the user's lock is then
 * held for no round trip to this process but the commit's (none at all when autocommitted).
 */
export async function insertAdmittedJob(
  db: EntityManager,
  user: User,
  limits: JobLimits,
  job: { id: string; type: JobType; params: object; steps: number },
  images = 0,
): Promise<Job> {
  const [row]: (Admission & Partial<Job>)[] = await db.query(
    `WITH admission AS (SELECT * FROM job_admission($1, $2, $3, $4, $5)),
          inserted AS (INSERT INTO job (id, type, "ownerId", params, steps)
                       SELECT $6::uuid, $7::job_type, $1, $8::jsonb, $9::int FROM admission WHERE refusal IS NULL RETURNING *)
     SELECT admission.*, inserted.* FROM admission LEFT JOIN inserted ON true`,
    [...admissionArgs(user, limits, images), job.id, job.type, JSON.stringify(job.params), job.steps],
  );
  throwIfRefused(row, limits, images);
  return db.getRepository(Job).create(row);
}

function throwIfRefused({ active, recent, coming, made, refusal }: Admission, limits: JobLimits, images: number): void {
  if (refusal === 'ACTIVE') {
    throw quotaExceeded(`You have ${active} jobs queued or running, the most allowed: wait for some to finish or cancel them`);
  }
  if (refusal === 'PER_MINUTE') throw rateLimited(`You started ${recent} jobs in the last minute, the most allowed: try again shortly`);
  if (refusal === 'IMAGES_PER_DAY') {
    const counted = made > limits.imagesPerDay ? `more than ${limits.imagesPerDay}` : `${made}`;
    throw quotaExceeded(
      `You made ${counted} images in the last 24 hours and have ${coming} on the way; ${images} more would pass the ${limits.imagesPerDay} a day allowed`,
    );
  }
}
