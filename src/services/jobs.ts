import type { DataSource } from 'typeorm';
import { In } from 'typeorm';
import { Job, JobStatus, type User } from '../entities';
import type { Queue } from '../jobs/queue';
import { conflict, notFound } from './errors';
import { parseId } from './validate';
import { isAdmin } from './viewer';

/** Jobs are private to their owner (and visible to admins). */
export function listJobs(db: DataSource, user: User): Promise<Job[]> {
  return db.getRepository(Job).find({ where: isAdmin(user) ? {} : { ownerId: user.id }, order: { createdAt: 'DESC' } });
}

export async function getJob(db: DataSource, user: User, id: string): Promise<Job> {
  const job = await db.getRepository(Job).findOneBy({ id: parseId(id) });
  if (!job || (job.ownerId !== user.id && !isAdmin(user))) throw notFound('Job');
  return job;
}

const CANCELABLE = [JobStatus.QUEUED, JobStatus.RUNNING];

/** Marks a queued or running job CANCELED and withdraws it from the queue. */
export async function cancelJob(db: DataSource, queue: Queue, user: User, id: string): Promise<Job> {
  const job = await getJob(db, user, id);
  // The status condition makes a race with a finishing worker end in one outcome, not both.
  const { affected } = await db
    .getRepository(Job)
    .update({ id: job.id, status: In(CANCELABLE) }, { status: JobStatus.CANCELED, finishedAt: new Date() });
  if (!affected) throw conflict(`The job is already ${job.status}`);
  await queue.cancel(job.type, job.id);
  return db.getRepository(Job).findOneByOrFail({ id: job.id });
}
