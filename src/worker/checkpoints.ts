import { DreamBoothError, parseDreamBoothCheckpoint, serializeDreamBoothCheckpoint, type DreamBoothCheckpoint } from '../engine';
import type { CheckpointConfig } from '../config';
import type { Services } from '../services/container';

const CHECKPOINTS = 'checkpoints/';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Where a job's checkpoints live: one folder per job, then per version the training started from. */
export const checkpointPrefix = (jobId: string) => `${CHECKPOINTS}${jobId}/`;

/**
 * The checkpoints of one fine-tune job in the object store, so any worker can continue the job where
 * the last one left it. A checkpoint only continues training from the version it started from
 * (`from`, null for the base model): when another contribution merged while the job waited, its
 * checkpoints are stale and the job starts over on the new head.
 */
export class JobCheckpoints {
  readonly #folder: string;

  constructor(
    private readonly store: Services['store'],
    private readonly jobId: string,
    from: string | null,
    private readonly config: CheckpointConfig,
  ) {
    this.#folder = `${checkpointPrefix(jobId)}${from ?? 'base'}/`;
  }

  /**
   * The newest checkpoint to continue from, if any; stale ones (of another start) are deleted, and so
   * are the job's checkpoints when the newest cannot be read (an older engine's format): it starts over.
   */
  async newest(): Promise<DreamBoothCheckpoint | undefined> {
    const keys = await this.store.list(checkpointPrefix(this.jobId));
    for (const key of keys.filter((k) => !k.startsWith(this.#folder))) await this.store.delete(key);
    const own = keys.filter((k) => k.startsWith(this.#folder));
    if (!own.length) return undefined;
    try {
      return parseDreamBoothCheckpoint(await this.store.get(own[own.length - 1]));
    } catch (error) {
      if (!(error instanceof DreamBoothError)) throw error;
      for (const key of own) await this.store.delete(key);
      return undefined;
    }
  }

  /** Stores `checkpoint` (one object, written whole), then deletes all but the newest `kept`. */
  async save(checkpoint: DreamBoothCheckpoint): Promise<void> {
    // Zero-padded steps: the store lists keys in lexicographic order, which is then step order.
    await this.store.put(`${this.#folder}${String(checkpoint.step).padStart(8, '0')}.safetensors`, serializeDreamBoothCheckpoint(checkpoint));
    const keys = await this.store.list(this.#folder);
    for (const key of keys.slice(0, Math.max(0, keys.length - this.config.kept))) await this.store.delete(key);
  }

  /** Deletes every checkpoint of the job (it finished, failed or was canceled). */
  static async clear(store: Services['store'], jobId: string): Promise<void> {
    for (const key of await store.list(checkpointPrefix(jobId))) await store.delete(key);
  }

  /** The jobs that have checkpoints (by their folders' names; anything else there is not ours to judge). */
  static async jobIds(store: Services['store']): Promise<string[]> {
    const folders = (await store.list(CHECKPOINTS)).map((key) => key.slice(CHECKPOINTS.length).split('/')[0]);
    return [...new Set(folders)].filter((id) => UUID.test(id));
  }
}
