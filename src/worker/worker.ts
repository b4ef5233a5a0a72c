import { EngineWorker } from '../engine/runtime';
import { JobType } from '../entities';
import type { Services } from '../services/container';
import { FineTuneHandler } from './handlers/finetune';
import { GenerateHandler } from './handlers/generate';
import { keepAlive, sweepStalledJobs } from './liveness';

export interface RunningWorker {
  stop(): Promise<void>;
}

/** Beats per timeout: a job survives a few slow or lost heartbeat writes. */
const BEATS_PER_TIMEOUT = 4;

/**
 * The worker role: takes jobs from the queue one at a time and runs them on this process's engine
 * (one onnxruntime worker thread). Any number of worker processes share the queue through PostgreSQL.
 * Each keeps its running job's heartbeat fresh and, at start and then periodically, fails the running
 * jobs of workers that died.
 */
export async function startWorker(services: Services): Promise<RunningWorker> {
  const { db, log, config } = services;
  const timeout = config.jobHeartbeatTimeoutSeconds;
  const intervalMs = (timeout * 1000) / BEATS_PER_TIMEOUT;
  const alive = (run: (id: string) => Promise<void>) => async (id: string) => {
    const stopBeating = keepAlive(db, log, id, intervalMs);
    try {
      await run(id);
    } finally {
      stopBeating();
    }
  };
  const sweep = () => sweepStalledJobs(db, log, timeout).catch((error) => log.error({ err: error }, 'stalled job sweep failed'));
  await sweep();
  const sweeper = setInterval(sweep, intervalMs);

  const engine = new EngineWorker({ device: config.engineDevice });
  const generate = new GenerateHandler(services, engine);
  const stopGenerating = await services.queue.work(JobType.GENERATE, alive((id) => generate.run(id)));
  const fineTune = new FineTuneHandler(services, engine);
  const stopFineTuning = await services.queue.work(JobType.FINETUNE, alive((id) => fineTune.run(id)));
  return {
    stop: async () => {
      clearInterval(sweeper);
      await stopGenerating();
      await stopFineTuning();
      await generate.stop();
      await fineTune.stop();
      await engine.close();
    },
  };
}
