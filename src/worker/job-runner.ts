import type { EntityManager } from 'typeorm';
import type { Job } from '../entities';
import { isServiceOutage, untilServicesAnswer } from '../services/availability';
import type { Services } from '../services/container';
import { claimJob, failRunningJob, finishJob, isJobRunning, recordForRun, recordJobProgress, requeueJob } from '../services/job-lifecycle';

/** The abort reason of a job whose worker is stopping: the job goes back to the queue for another worker. */
export class WorkerStopping extends Error {
  override readonly name = 'WorkerStopping';
}

/** What a handler's work sees of the job it runs. */
export interface JobRun {
  /** Aborted when the job is canceled (or taken back by a sweep) and when the worker stops. */
  signal: AbortSignal;
  /** Aborted only when the worker stops: the work may save where it stands (a checkpoint) before it ends. */
  stopping: AbortSignal;
  /**
   * Records a step, in order, without waiting. The write is conditional on the job still RUNNING, so
   * it doubles as the cancellation check: once the row says otherwise, `signal` aborts.
   */
  progress(values: { step: number; steps: number; loss?: number }): void;
  /** Re-reads the row after a long wait (for a lock), aborting `signal` and throwing once the job is no longer RUNNING. */
  checkStillRunning(): Promise<void>;
  /**
   * Waits for the progress writes, then writes what the run made on its way (previews) with `write`, while the
   * job is still this run's; false when it is not (canceled meanwhile: `signal` aborts) and nothing was written.
   */
  record(write: (tx: EntityManager) => Promise<void>): Promise<boolean>;
  /**
   * Waits for the progress writes, then makes the job SUCCEEDED together with what `record` writes of
   * its result; false when the job was canceled meanwhile, and the caller discards what it made.
   */
  finish(record: (tx: EntityManager) => Promise<void>): Promise<boolean>;
}

/** One kind of job's own work; the lifecycle around it is the JobRunner's. */
export interface JobHandler {
  work(job: Job, run: JobRun): Promise<void>;
  /** What the user reads when `work` throws `error`: messages of the handler's own failures, nothing internal. */
  userMessage(error: unknown): string;
  /** Frees what the handler keeps between jobs (loaded pipelines). */
  close(): Promise<void>;
}

/**
 * Runs the jobs of one handler in this process, each the same way: claim the QUEUED row, run the
 * handler's work with progress and cancellation, and end in exactly one outcome: finished by the work,
 * requeued when the worker stops or PostgreSQL or the object store went away under it (the queue
 * delivers it again, to any worker), left as it is when canceled (the cancel recorded it), or failed
 * with the handler's message for the user.
 */
export class JobRunner {
  readonly #controllers = new Map<string, AbortController>();
  readonly #settled = new Set<Promise<void>>();
  readonly #stopping = new AbortController();

  constructor(
    private readonly services: Services,
    private readonly handler: JobHandler,
  ) {}

  /** Runs job `jobId` to one of its outcomes. */
  run(jobId: string): Promise<void> {
    const run = this.#run(jobId);
    const settled = run.then(() => {}, () => {});
    this.#settled.add(settled);
    void settled.then(() => this.#settled.delete(settled));
    return run;
  }

  /** Aborts every running job with WorkerStopping, so each returns to the queue, waits for them, and closes the handler. */
  async stop(): Promise<void> {
    const reason = new WorkerStopping('the worker is stopping');
    this.#stopping.abort(reason);
    for (const controller of this.#controllers.values()) controller.abort(reason);
    await Promise.all(this.#settled);
    await this.handler.close();
  }

  async #run(jobId: string): Promise<void> {
    const { db, log, queue } = this.services;
    const job = await claimJob(db, jobId);
    if (!job) return;
    // Every write of this run is for this claim only: should a sweep take the job back meanwhile and another
    // worker claim it, nothing here changes the new run.
    const claimedAt = job.startedAt!;
    const controller = new AbortController();
    this.#controllers.set(jobId, controller);
    let written = Promise.resolve();
    const run: JobRun = {
      signal: controller.signal,
      stopping: this.#stopping.signal,
      progress: (values) => {
        written = written
          .then(async () => {
            if (controller.signal.aborted) return;
            if (!(await recordJobProgress(db, jobId, values, claimedAt))) controller.abort(new Error('canceled'));
          })
          .catch((error) => log.warn({ err: error, jobId }, 'progress update failed'));
      },
      checkStillRunning: async () => {
        if (!(await isJobRunning(db, jobId, claimedAt))) controller.abort(new Error('canceled'));
        controller.signal.throwIfAborted();
      },
      record: async (write) => {
        await written;
        const recorded = await recordForRun(db, jobId, claimedAt, write);
        if (!recorded) controller.abort(new Error('canceled'));
        return recorded;
      },
      finish: async (record) => {
        await written;
        return finishJob(db, jobId, record, claimedAt);
      },
    };
    try {
      await this.handler.work(job, run);
    } catch (error) {
      if (controller.signal.reason instanceof WorkerStopping) {
        await requeueJob(db, queue, jobId, { claimedAt });
        log.info({ jobId }, 'handed a job back as the worker stops');
        return;
      }
      if (controller.signal.aborted) return; // canceled: whoever changed the row has recorded it
      if (isServiceOutage(error)) {
        // Not the job's fault: pause until the stores answer, then hand it back (a fine-tune resumes from its checkpoint).
        log.warn({ err: error, jobId }, 'a store went away under a job; waiting for it to hand the job back');
        await untilServicesAnswer(this.services, this.#stopping.signal).catch(() => {});
        // Should the stores still be away (the worker stopped waiting), the row stays RUNNING and a sweep takes it back.
        await requeueJob(db, queue, jobId, { claimedAt }).catch((err) => log.warn({ err, jobId }, 'could not hand the job back; a sweep will'));
        return;
      }
      log.error({ err: error, jobId, type: job.type }, 'job failed');
      await failRunningJob(db, jobId, this.handler.userMessage(error), { claimedAt });
    } finally {
      this.#controllers.delete(jobId);
    }
  }
}
