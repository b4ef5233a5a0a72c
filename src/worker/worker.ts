import { EngineWorker } from '../engine';
import { JobType } from '../entities';
import type { Services } from '../services/container';
import { endedJobs, recordHeartbeat, sweepStalledJobs } from '../services/job-lifecycle';
import { deleteExpiredExports } from '../services/weight-export';
import { removeSilentWorkers, WorkerRegistration } from '../services/workers';
import { FineTuneHandler } from './handlers/finetune';
import { GenerateHandler } from './handlers/generate';
import { JobCheckpoints } from './checkpoints';
import { JobRunner, type JobHandler } from './job-runner';

export interface RunningWorker {
  stop(): Promise<void>;
}

/** Beats per timeout: a job survives a few slow or lost heartbeat writes. */
const BEATS_PER_TIMEOUT = 4;

/**
 * The worker role: takes jobs from the queue one at a time per type and runs them on this process's
 * engine (one onnxruntime worker thread). Any number of worker processes share the queue through
 * PostgreSQL. Each keeps its running jobs' heartbeats fresh and, at start and then periodically, takes
 * back the running jobs of workers that died (requeued, or failed past the retry limit) and deletes
 * the checkpoints of jobs that ended (failed, canceled, or finished by a worker that died before it
 * deleted them). While PostgreSQL or the object store is away, these loops and the queue's
 * fetching log their failures and go on, so work resumes by itself when the stores come back.
 */
export async function startWorker(services: Services): Promise<RunningWorker> {
  const { db, log, config, queue } = services;
  const timeout = config.jobHeartbeatTimeoutSeconds;
  const intervalMs = (timeout * 1000) / BEATS_PER_TIMEOUT;
  const sweep = async () => {
    try {
      await sweepStalledJobs(db, queue, log, { timeoutSeconds: timeout, maxRetries: config.jobMaxRetries });
      await removeSilentWorkers(db, timeout);
      await deleteExpiredExports(db, services.store);
      for (const id of await endedJobs(db, await JobCheckpoints.jobIds(services.store))) await JobCheckpoints.clear(services.store, id);
    } catch (error) {
      log.error({ err: error }, 'stalled job sweep failed');
    }
  };
  await sweep();
  const registration = await WorkerRegistration.register(db, config.engineDevice);
  const sweeper = setInterval(() => {
    void sweep();
    registration.beat().catch((error) => log.warn({ err: error }, 'worker heartbeat failed'));
  }, intervalMs);

  const engine = new EngineWorker({ device: config.engineDevice });
  const handlers: Record<JobType, JobHandler> = {
    [JobType.GENERATE]: new GenerateHandler(services, engine),
    [JobType.FINETUNE]: new FineTuneHandler(services, engine),
  };
  const runners: JobRunner[] = [];
  const stopFetching: (() => Promise<void>)[] = [];
  for (const [type, handler] of Object.entries(handlers) as [JobType, JobHandler][]) {
    const runner = new JobRunner(services, handler);
    runners.push(runner);
    stopFetching.push(await queue.work(type, (id) => beating(id, () => runner.run(id))));
  }
  return {
    stop: async () => {
      clearInterval(sweeper);
      for (const stop of stopFetching) await stop();
      for (const runner of runners) await runner.stop();
      await engine.close();
      await registration.unregister().catch((error) => log.warn({ err: error }, 'could not unregister the worker; a sweep will'));
    },
  };

  /** Runs `run` while marking job `id` alive every interval, whatever its phase. */
  async function beating(id: string, run: () => Promise<void>): Promise<void> {
    const beat = () => recordHeartbeat(db, id).catch((error) => log.warn({ err: error, jobId: id }, 'job heartbeat failed'));
    const timer = setInterval(beat, intervalMs);
    const told = (update: Promise<void>) => update.catch((error) => log.warn({ err: error, jobId: id }, 'worker heartbeat failed'));
    await told(registration.started(id));
    try {
      await run();
    } finally {
      clearInterval(timer);
      await told(registration.ended(id));
    }
  }
}
