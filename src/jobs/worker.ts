import { EngineWorker } from '../engine/runtime';
import { JobType } from '../entities';
import type { Services } from '../resolvers/context';
import { FineTuneHandler } from './handlers/finetune';
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
  const fineTune = new FineTuneHandler(services, engine);
  const stopFineTuning = await services.queue.work(JobType.FINETUNE, (id) => fineTune.run(id));
  return {
    stop: async () => {
      await stopGenerating();
      await stopFineTuning();
      await generate.stop();
      await fineTune.stop();
      await engine.close();
    },
  };
}
