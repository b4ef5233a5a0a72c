import { EngineWorker } from '../engine/runtime';
import { JobType } from '../entities';
import type { Services } from '../resolvers/context';
import { GenerateHandler } from './handlers/generate';

export interface RunningWorker {
  stop(): Promise<void>;
}

/**
 * The worker role: takes jobs from the queue one at a time and runs them on this process's engine
 * (one onnxruntime worker thread). Any number of worker processes share the queue through PostgreSQL.
 */
export async function startWorker(services: Services): Promise<RunningWorker> {
  const engine = new EngineWorker({ device: services.config.engineDevice });
  const generate = new GenerateHandler(services, engine);
  const stopGenerating = await services.queue.work(JobType.GENERATE, (id) => generate.run(id));
  return {
    stop: async () => {
      await stopGenerating();
      await generate.stop();
      await engine.close();
    },
  };
}
