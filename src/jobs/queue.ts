import PgBoss from 'pg-boss';
import type { Logger } from 'pino';
import { JobType } from '../entities';

/** pg-boss queue per job type. The queue job's id is the Job row's id, so both name the same work. */
const QUEUES: Record<JobType, string> = {
  [JobType.FINETUNE]: 'finetune',
  [JobType.GENERATE]: 'generate',
};

/** Delivery of jobs to workers through PostgreSQL (pg-boss): no extra service to run. */
export class Queue {
  private constructor(private readonly boss: PgBoss) {}

  /** Starts pg-boss on its own schema (created or upgraded on first start) and makes our queues. */
  static async start(databaseUrl: string, log: Logger): Promise<Queue> {
    const boss = new PgBoss({ connectionString: databaseUrl, schema: 'pgboss' });
    boss.on('error', (error) => log.error({ err: error }, 'queue error'));
    await boss.start();
    for (const name of Object.values(QUEUES)) {
      if (!(await boss.getQueue(name))) await boss.createQueue(name);
    }
    return new Queue(boss);
  }

  async cancel(type: JobType, id: string): Promise<void> {
    await this.boss.cancel(QUEUES[type], id);
  }

  async stop(): Promise<void> {
    await this.boss.stop({ graceful: true, timeout: 10_000 });
  }
}
