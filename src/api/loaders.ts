import DataLoader from 'dataloader';
import type { DataSource } from 'typeorm';
import type { BaseModel, Concept, Image, ModelVersion } from '../entities';
import type { Page } from '../services/pagination';
import { getBaseModels } from '../services/base-models';
import { getConcepts, listConceptsOfModels } from '../services/concepts';
import { listImagesOfJobs } from '../services/images';
import { firstVersionPages, getVersions } from '../services/versions';
import { queueEstimates, type QueueEstimate } from '../services/queue-estimates';
import { usageOf, type Usage } from '../services/admin-insight';

/**
 * Nested fields of a list (each model's versions, each job's images) load through these, so a list of
 * any length costs one query per field rather than one per row (DataLoader batches the keys asked for
 * in one tick). Nothing is cached between batches: a subscription's later events read afresh.
 * Field resolvers run only on parents the viewer may see, so the loaders check nothing themselves.
 */
export class Loaders {
  // Each made when a resolver first asks for it: most requests use one or none.
  #baseModel?: DataLoader<string, BaseModel>;
  #version?: DataLoader<string, ModelVersion>;
  #concept?: DataLoader<string, Concept>;
  #versionPages?: Map<number | null, DataLoader<string, Page<ModelVersion>>>;
  #conceptsOfModel?: DataLoader<string, Concept[]>;
  #imagesOfJob?: DataLoader<string, Image[]>;
  #queueEstimate?: DataLoader<string, QueueEstimate>;
  #usage?: DataLoader<string, Usage>;

  constructor(private readonly db: DataSource) {}

  get baseModel() {
    return (this.#baseModel ??= byId((ids) => getBaseModels(this.db, ids)));
  }
  get version() {
    return (this.#version ??= byId((ids) => getVersions(this.db, ids)));
  }
  get concept() {
    return (this.#concept ??= byId((ids) => getConcepts(this.db, ids)));
  }
  /** Each model's first page of versions, by page size. */
  versionPages(first: number | null) {
    const loaders = (this.#versionPages ??= new Map());
    let loader = loaders.get(first);
    if (!loader) {
      loader = new DataLoader<string, Page<ModelVersion>>(async (ids) => {
        const pages = await firstVersionPages(this.db, ids, first);
        return ids.map((id) => pages.get(id)!);
      }, { cache: false });
      loaders.set(first, loader);
    }
    return loader;
  }
  get conceptsOfModel() {
    return (this.#conceptsOfModel ??= byParent((ids) => listConceptsOfModels(this.db, ids), (concept) => concept.modelId));
  }
  get imagesOfJob() {
    return (this.#imagesOfJob ??= byParent((ids) => listImagesOfJobs(this.db, ids), (image) => image.jobId));
  }
  /** By job id: its queue position and estimates. */
  get queueEstimate() {
    return (this.#queueEstimate ??= byKey((ids) => queueEstimates(this.db, ids)));
  }
  /** By user id. */
  get usage() {
    return (this.#usage ??= byKey((ids) => usageOf(this.db, ids)));
  }
}

/** One row per id; a missing row is an error for that key alone. */
function byId<T extends { id: string }>(rows: (ids: readonly string[]) => Promise<T[]>): DataLoader<string, T> {
  return new DataLoader(
    async (ids) => {
      const found = new Map((await rows(ids)).map((row) => [row.id, row]));
      return ids.map((id) => found.get(id) ?? new Error(`no row ${id}`));
    },
    { cache: false },
  );
}

/** One value per key, from a map of them; a missing key is an error for that key alone. */
function byKey<T>(values: (keys: readonly string[]) => Promise<Map<string, T>>): DataLoader<string, T> {
  return new DataLoader(
    async (keys) => {
      const found = await values(keys);
      return keys.map((key) => found.get(key) ?? new Error(`nothing for ${key}`));
    },
    { cache: false },
  );
}

/** The rows of each parent, in the order the query returns them. */
function byParent<T>(rows: (parentIds: readonly string[]) => Promise<T[]>, parentOf: (row: T) => string): DataLoader<string, T[]> {
  return new DataLoader(
    async (parentIds) => {
      const groups = new Map<string, T[]>(parentIds.map((id) => [id, []]));
      for (const row of await rows(parentIds)) groups.get(parentOf(row))?.push(row);
      return parentIds.map((id) => groups.get(id)!);
    },
    { cache: false },
  );
}
