import type { Logger } from 'pino';
import type { DataSource, EntityManager } from 'typeorm';
import type { Config } from '../config';
import type { JobType } from '../entities';
import type { ObjectStore } from '../storage/object-store';
import type { KeyCache } from './api-keys';
import type { JobAdmissions } from './job-admissions';
import type { JobEvents } from './job-events';

/**
 * Delivery of queued work to workers (pg-boss on PostgreSQL: storage/job-queue.ts). The queue job's id
 * is the Job row's id, so both name the same work.
 */
export interface JobQueue {
  /** Queues the work of Job rows `ids`; in transaction `tx` when given (with the rows' insert). */
  send(type: JobType, ids: readonly string[], tx?: EntityManager): Promise<void>;
  /** Delivers job `id` again, whatever became of its earlier delivery, in transaction `tx` (with the row's return to QUEUED). */
  requeue(tx: EntityManager, type: JobType, id: string): Promise<void>;
  /** Runs `handler` for each job of `type`, one at a time in this process; returns what stops fetching. */
  work(type: JobType, handler: (id: string) => Promise<void>): Promise<() => Promise<void>>;
  cancel(type: JobType, id: string): Promise<void>;
  /** Stops fetching and sending; main.ts calls it at shutdown. */
  stop(): Promise<void>;
}

/** What the services that queue work use: the database, the object store (base packs), the queue, the job limits and admissions. */
export type JobServices = Pick<Services, 'db' | 'store' | 'queue' | 'config' | 'admissions'>;

/** The long-lived parts the API and the worker share, built once by main.ts. */
export interface Services {
  config: Config;
  log: Logger;
  db: DataSource;
  store: ObjectStore;
  queue: JobQueue;
  /** Job changes from every process, for this process's subscribers. */
  events: JobEvents;
  /** Authenticates requests, remembering verified keys until a change is announced. */
  keys: KeyCache;
  /** Admits, inserts and queues each user's generations in groups. */
  admissions: JobAdmissions;
}
