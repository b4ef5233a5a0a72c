import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { DataSource } from 'typeorm';
import { WorkerProcess } from '../entities';

/**
 * Worker processes as they report themselves (admins read them as `workers`): a row each, written at
 * start, refreshed with the jobs it runs at every heartbeat and whenever a job starts or ends, deleted when
 * it stops. A process that died leaves its row; any worker's sweep deletes rows silent past the timeout.
 */
export class WorkerRegistration {
  readonly id = randomUUID();
  readonly #jobs = new Set<string>();

  private constructor(
    private readonly db: DataSource,
    private readonly device: string,
  ) {}

  static async register(db: DataSource, device: string): Promise<WorkerRegistration> {
    const registration = new WorkerRegistration(db, device);
    await registration.beat();
    return registration;
  }

  /** Job `jobId` runs here from now until `ended`. */
  started(jobId: string): Promise<void> {
    this.#jobs.add(jobId);
    return this.beat();
  }

  ended(jobId: string): Promise<void> {
    this.#jobs.delete(jobId);
    return this.beat();
  }

  /** Alive now, with the jobs it runs; the row is written again should a sweep have taken it while the database was away. */
  async beat(): Promise<void> {
    const workers = this.db.getRepository(WorkerProcess);
    const currentJobIds = [...this.#jobs];
    const { affected } = await workers.update(this.id, { lastHeartbeatAt: () => 'now()', currentJobIds });
    if (!affected) await workers.insert({ id: this.id, host: os.hostname(), pid: process.pid, device: this.device, currentJobIds });
  }

  async unregister(): Promise<void> {
    await this.db.getRepository(WorkerProcess).delete(this.id);
  }
}

/** Deletes the rows of workers silent for `timeoutSeconds`: they died without unregistering. */
export async function removeSilentWorkers(db: DataSource, timeoutSeconds: number): Promise<void> {
  await db
    .createQueryBuilder()
    .delete()
    .from(WorkerProcess)
    .where(`"lastHeartbeatAt" < now() - make_interval(secs => :timeoutSeconds)`, { timeoutSeconds })
    .execute();
}

/** Every registered worker, the longest-running first. */
export function listWorkers(db: DataSource): Promise<WorkerProcess[]> {
  return db.getRepository(WorkerProcess).find({ order: { startedAt: 'ASC', id: 'ASC' } });
}
