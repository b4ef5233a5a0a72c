import PgBoss from 'pg-boss';
import type { Logger } from 'pino';
import type { EntityManager } from 'typeorm';
import { JobType } from '../entities';

/**
 * pg-boss queue per job type, and how long pg-boss lets a worker hold one of its jobs. The queue job's
 * id is the Job row's id, so both name the same work. The heartbeat sweep, not this expiry, takes jobs
 * back from dead workers; an expired delivery of a job still RUNNING claims nothing (claimJob).
 */
const QUEUES: Record<JobType, { name: string; expireInMinutes: number }> = {
  // A training run may sit behind others on the same metamodel.
  [JobType.FINETUNE]: { name: 'finetune', expireInMinutes: 12 * 60 },
  [JobType.GENERATE]: { name: 'generate', expireInMinutes: 60 },
};

/** pg-boss's statements run in transaction `tx` (its `db` option). */
const inTransaction = (tx: EntityManager) => ({
  executeSql: async (text: string, values: unknown[]) => ({ rows: (await tx.queryRunner!.query(text, values, true)).records }),
});

/** pg-boss's job for the work of Job row `id`. */
function delivery(type: JobType, id: string): PgBoss.JobInsert {
  const { name, expireInMinutes } = QUEUES[type];
  return { id, name, retryLimit: 1, expireInSeconds: expireInMinutes * 60 };
}

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
    for (const { name } of Object.values(QUEUES)) {
      if (!(await boss.getQueue(name))) await boss.createQueue(name);
    }
    return new PgBossQueue(boss);
  }

  /**
   * Queues the work of Job rows `ids`, in one statement; inside transaction `tx` when given, so the rows
   * and their deliveries commit together (one commit, one WAL flush). A handler that throws is retried
   * once; handlers record ordinary failures on the row and return.
   */
  async send(type: JobType, ids: readonly string[], tx?: EntityManager): Promise<void> {
    await this.boss.insert(ids.map((id) => delivery(type, id)), tx ? { db: inTransaction(tx) } : {});
  }

  /**
   * Delivers job `id` again, whatever became of its earlier delivery (held by a dead worker, completed
   * by one that handed it back), inside transaction `tx`: the row's return to QUEUED and its delivery
   * commit together or not at all.
   */
  async requeue(tx: EntityManager, type: JobType, id: string): Promise<void> {
    const db = inTransaction(tx);
    await this.boss.deleteJob(QUEUES[type].name, id, { db });
    await this.boss.insert([delivery(type, id)], { db });
  }

  /** Runs `handler` for each job of `type`, one at a time in this process; returns what stops fetching. */
  async work(type: JobType, handler: (id: string) => Promise<void>): Promise<() => Promise<void>> {
    const workerId = await this.boss.work(
      QUEUES[type].name,
      { batchSize: 1, pollingIntervalSeconds: POLLING_INTERVAL_SECONDS },
      async (jobs) => {
        for (const job of jobs) await handler(job.id);
      },
    );
    return () => this.boss.offWork({ id: workerId });
  }

  async cancel(type: JobType, id: string): Promise<void> {
    await this.boss.cancel(QUEUES[type].name, id);
  }

  async stop(): Promise<void> {
    await this.boss.stop({ graceful: true, timeout: 10_000 });
  }
}
