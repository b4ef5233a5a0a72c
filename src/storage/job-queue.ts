import PgBoss from 'pg-boss';
import type { Logger } from 'pino';
import { JobType } from '../entities';

/** pg-boss queue per job type. The queue job's id is the Job row's id, so both name the same work. */
const QUEUES: Record<JobType, string> = {
  [JobType.FINETUNE]: 'finetune',
  [JobType.GENERATE]: 'generate',
};

/** How often an idle worker asks PostgreSQL for work (pg-boss's minimum is 0.5 s). */
const POLLING_INTERVAL_SECONDS = 1;

/**
 * Delivery of jobs to workers through PostgreSQL (pg-boss): no extra service to run. It is the
 * platform's `JobQueue` (services/container.ts).
 */
export class PgBossQueue {
  private constructor(private readonly boss: PgBoss) {}

  /** Starts pg-boss on its own schema (created or upgraded on first start) and makes our queues. */
  static async start(databaseUrl: string, log: Logger): Promise<PgBossQueue> {
    const boss = new PgBoss({ connectionString: databaseUrl, schema: 'pgboss' });
    boss.on('error', (error) => log.error({ err: error }, 'queue error'));
    await boss.start();
    for (const name of Object.values(QUEUES)) {
      if (!(await boss.getQueue(name))) await boss.createQueue(name);
    }
    return new PgBossQueue(boss);
  }

  /**
   * Queues the work of Job row `id`. A handler that throws is retried once (a worker shutting down
   * hands its job back that way); handlers record ordinary failures on the row and return.
   */
  async send(type: JobType, id: string, expireInMinutes: number): Promise<void> {
    await this.boss.send(QUEUES[type], {}, { id, retryLimit: 1, expireInMinutes });
  }

  /** Runs `handler` for each job of `type`, one at a time in this process; returns what stops fetching. */
  async work(type: JobType, handler: (id: string) => Promise<void>): Promise<() => Promise<void>> {
    const workerId = await this.boss.work(
      QUEUES[type],
      { batchSize: 1, pollingIntervalSeconds: POLLING_INTERVAL_SECONDS },
      async (jobs) => {
        for (const job of jobs) await handler(job.id);
      },
    );
    return () => this.boss.offWork({ id: workerId });
  }

  async cancel(type: JobType, id: string): Promise<void> {
    await this.boss.cancel(QUEUES[type], id);
  }

  async stop(): Promise<void> {
    await this.boss.stop({ graceful: true, timeout: 10_000 });
  }
}
