import DataLoader from 'dataloader';
import type { BaseModel, Concept, Image, ModelVersion } from '../entities';
import type { Page } from '../services/pagination';
import { getBaseModels } from '../services/base-models';
import { getConcepts, listConceptsOfModels } from '../services/concepts';
import type { Services } from '../services/container';
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
export interface Loaders {
  baseModel: DataLoader<string, BaseModel>;
  version: DataLoader<string, ModelVersion>;
  concept: DataLoader<string, Concept>;
  /** Each model's first page of versions, by page size. */
  versionPages(first: number | null): DataLoader<string, Page<ModelVersion>>;
  conceptsOfModel: DataLoader<string, Concept[]>;
  imagesOfJob: DataLoader<string, Image[]>;
  /** By job id: its queue position and estimates. */
  queueEstimate: DataLoader<string, QueueEstimate>;
  /** By user id. */
  usage: DataLoader<string, Usage>;
}

export function createLoaders({ db }: Services): Loaders {
  const versionPages = new Map<number | null, DataLoader<string, Page<ModelVersion>>>();
  return {
    baseModel: byId((ids) => getBaseModels(db, ids)),
    version: byId((ids) => getVersions(db, ids)),
    concept: byId((ids) => getConcepts(db, ids)),
    versionPages: (first) => {
      let loader = versionPages.get(first);
      if (!loader) {
        loader = new DataLoader(async (ids) => {
          const pages = await firstVersionPages(db, ids, first);
          return ids.map((id) => pages.get(id)!);
        }, { cache: false });
        versionPages.set(first, loader);
      }
      return loader;
    },
    conceptsOfModel: byParent((ids) => listConceptsOfModels(db, ids), (concept) => concept.modelId),
    imagesOfJob: byParent((ids) => listImagesOfJobs(db, ids), (image) => image.jobId),
    queueEstimate: byKey((ids) => queueEstimates(db, ids)),
    usage: byKey((ids) => usageOf(db, ids)),
  };
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
