import type { Txt2ImgPipeline } from '../engine';

/**
 * Loaded pipelines of this worker process by what their weights are: the base model, plus the model
 * version whose weights (LoRA or full) sit on top of it. Versions are immutable, so a key never goes
 * stale. Full SD 1.5 weights are ~4 GiB in float32, so only the most recently used few stay.
 */
export class PipelineCache {
  readonly #entries = new Map<string, Promise<Txt2ImgPipeline>>();

  constructor(private readonly capacity = 1) {}

  static key(baseModelId: string, versionId: string | null): string {
    return versionId ? `${baseModelId}+${versionId}` : baseModelId;
  }

  /**
   * The pipeline under `key`, loaded by `load` on a miss. Callers run one job at a time, so an
   * evicted pipeline is never in use when it closes.
   */
  async get(key: string, load: () => Promise<Txt2ImgPipeline>): Promise<Txt2ImgPipeline> {
    let entry = this.#entries.get(key);
    if (entry) {
      this.#entries.delete(key); // re-inserted below as the most recent
    } else {
      entry = load();
      entry.catch(() => this.#entries.delete(key));
    }
    this.#entries.set(key, entry);
    for (const [oldKey, old] of this.#entries) {
      if (this.#entries.size <= this.capacity) break;
      this.#entries.delete(oldKey);
      await old.then((pipeline) => pipeline.close(), () => {});
    }
    return entry;
  }

  async close(): Promise<void> {
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    for (const entry of entries) await entry.then((pipeline) => pipeline.close(), () => {});
  }
}
