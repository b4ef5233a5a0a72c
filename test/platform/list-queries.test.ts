import { In } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BaseModel, Concept, FineTuneMethod, Image, Job, JobStatus, JobType, Model, ModelVersion, User } from '../../src/entities';
import { getBaseModels } from '../../src/services/base-models';
import { listConceptsOfModels } from '../../src/services/concepts';
import { listImagesOfJobs } from '../../src/services/images';
import { listJobs } from '../../src/services/jobs';
import { listModels } from '../../src/services/models';
import { appendVersion, firstVersionPages, getVersions } from '../../src/services/versions';
import { errorCode, gql, ok, signUp, sqlDuring, startTestPlatform, type TestPlatform } from './helpers';
import { defaultBaseModelId, newAdminKey } from './setup';

/**
 * Lists with nested fields cost a fixed number of SQL statements, however long they are: nested
 * fields load through batching loaders, not one query per row (N+1).
 */
describe('SQL statements per list query', () => {
  let platform: TestPlatform;
  let key: string;
  let userId: string;
  let baseModelId: string;

  /** Adds `count` models, each with a concept and a version, and `count` finished jobs with two images each. */
  const grow = async (count: number) => {
    const { db } = platform.services;
    for (let i = 0; i < count; i++) {
      const modelId = (await ok(gql(platform.url, 'mutation($b: ID!) { createModel(input: { name: "m", kind: PRIVATE_META, baseModelId: $b }) { id } }', { b: baseModelId }, key))).createModel.id;
      await ok(gql(platform.url, 'mutation($m: ID!) { createConcept(input: { modelId: $m, category: "dog", kind: OBJECT }) { id } }', { m: modelId }, key));
      await db.transaction((tx) => appendVersion(tx, modelId, null, { weightsKey: null, method: FineTuneMethod.LORA, contributionId: null }));
      const job = await db.getRepository(Job).save({ type: JobType.GENERATE, ownerId: userId, status: JobStatus.SUCCEEDED, params: {}, steps: 1 });
      await db.getRepository(Image).insert([0, 1].map((n) => ({ objectKey: `images/${job.id}/${n}.png`, jobId: job.id, seed: n, prompt: 'p', width: 64, height: 64 })));
    }
  };

  /** The statements one request sends, once the key's verdict is remembered (authentication costs none). */
  const statementsOf = async (query: string) => {
    for (let i = 0; i < 100 && (await sqlDuring(platform.services.db, () => gql(platform.url, '{ me { id } }', {}, key))).length > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    let data: Record<string, any> = {};
    const statements = await sqlDuring(platform.services.db, async () => (data = await ok(gql(platform.url, query, {}, key))));
    return { statements, data };
  };

  const LISTS = {
    models: '{ models(first: 100) { nodes { id baseModel { id } headVersion { id } versions(first: 5) { nodes { id } } concepts { id token } } } }',
    jobs: '{ jobs(first: 100) { nodes { id images { id url } } } }',
  };

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    ({ key, userId } = await signUp(platform.url, 'lists@example.org'));
    baseModelId = await defaultBaseModelId(platform, key);
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('stays the same from 2 rows to 12, one statement per list and nested field', async () => {
    await grow(2);
    const few = { models: await statementsOf(LISTS.models), jobs: await statementsOf(LISTS.jobs) };
    await grow(10);
    const many = { models: await statementsOf(LISTS.models), jobs: await statementsOf(LISTS.jobs) };

    expect(many.models.data.models.nodes).toHaveLength(12);
    expect(many.models.data.models.nodes.every((m: any) => m.baseModel.id === baseModelId && m.versions.nodes.length === 1 && m.headVersion.id === m.versions.nodes[0].id && m.concepts.length === 1)).toBe(true);
    expect(many.jobs.data.jobs.nodes).toHaveLength(12);
    expect(many.jobs.data.jobs.nodes.every((j: any) => j.images.length === 2)).toBe(true);

    expect(many.models.statements).toHaveLength(few.models.statements.length);
    expect(many.models.statements.length).toBeLessThanOrEqual(5); // the list, base models, head versions, versions, concepts
    expect(many.jobs.statements).toHaveLength(few.jobs.statements.length);
    expect(many.jobs.statements.length).toBeLessThanOrEqual(2); // the page, images (no count unless asked for)
  });
  it('hands back the rows TypeORM would, with bigints as numbers', async () => {
    await grow(1);
    const { db } = platform.services;
    const user = await db.getRepository(User).findOneByOrFail({ id: userId });
    const models = (await listModels(db, user, {}, { first: 100 })).nodes;
    const modelIds = models.map((model) => model.id);
    const jobs = (await listJobs(db, user, {}, { first: 100 })).nodes;
    const jobIds = jobs.map((job) => job.id);
    const versions = [...(await firstVersionPages(db, modelIds, 100)).values()].flatMap((page) => page.nodes);
    const images = await listImagesOfJobs(db, jobIds);
    expect(models.length).toBeGreaterThan(0);
    expect(images.length).toBeGreaterThan(0);
    expect(images.every((image) => typeof image.seed === 'number' && typeof image.bytes === 'number')).toBe(true);
    const byId = <T extends { id: string }>(rows: T[]) => [...rows].sort((a, b) => a.id.localeCompare(b.id));
    const hydrated = async <T extends { id: string }>(entity: new () => T, ids: string[]) => byId(await db.getRepository(entity).findBy({ id: In(ids) } as never));
    expect(byId(models)).toEqual(await hydrated(Model, modelIds));
    expect(byId(jobs)).toEqual(await hydrated(Job, jobIds));
    expect(byId(versions)).toEqual(await hydrated(ModelVersion, versions.map((v) => v.id)));
    expect(byId(await getVersions(db, versions.map((v) => v.id)))).toEqual(await hydrated(ModelVersion, versions.map((v) => v.id)));
    expect(byId(images)).toEqual(await hydrated(Image, images.map((i) => i.id)));
    const concepts = await listConceptsOfModels(db, modelIds);
    expect(byId(concepts)).toEqual(await hydrated(Concept, concepts.map((c) => c.id)));
    expect(await getBaseModels(db, [baseModelId])).toEqual(await hydrated(BaseModel, [baseModelId]));
  });
});

/** Growing lists come in pages: newest first, cursors that stay valid while rows arrive, filters, a total. */
describe('paginated lists', () => {
  let platform: TestPlatform;
  let key: string;
  let userId: string;

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    ({ key, userId } = await signUp(platform.url, 'pages@example.org'));
    const jobs = platform.services.db.getRepository(Job);
    for (let i = 0; i < 25; i++) {
      await jobs.save({ type: i % 5 === 0 ? JobType.FINETUNE : JobType.GENERATE, ownerId: userId, status: i % 2 ? JobStatus.SUCCEEDED : JobStatus.FAILED, params: { i }, steps: 1 });
    }
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  const page = async (variables: Record<string, unknown>) => {
    const response = await gql(
      platform.url,
      'query($first: Int, $after: String, $status: JobStatus, $type: JobType) { jobs(first: $first, after: $after, status: $status, type: $type) { edges { cursor node { params } } nodes { params } pageInfo { hasNextPage endCursor } totalCount } }',
      variables,
      key,
    );
    if (response.errors) return response;
    return response.data!.jobs;
  };

  it('walks every job once, newest first, and stays put while new jobs arrive', async () => {
    const seen: number[] = [];
    let after: string | null = null;
    for (;;) {
      const { nodes, edges, pageInfo, totalCount } = await page({ first: 10, after });
      expect(totalCount).toBe(after === null ? 25 : 26); // the count is live
      expect(edges.map((e: any) => e.node)).toEqual(nodes);
      seen.push(...nodes.map((n: any) => n.params.i));
      if (after === null) {
        // A job created after the first page does not shift the pages after it.
        await platform.services.db.getRepository(Job).save({ type: JobType.GENERATE, ownerId: userId, status: JobStatus.QUEUED, params: { i: 99 }, steps: 1 });
      }
      if (!pageInfo.hasNextPage) break;
      after = pageInfo.endCursor;
    }
    expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => 24 - i));
  });

  it('filters by status and type, and refuses bad page arguments', async () => {
    const failedFineTunes = await page({ status: 'FAILED', type: 'FINETUNE', first: 100 });
    expect(failedFineTunes.nodes.map((n: any) => n.params.i)).toEqual([20, 10, 0]);
    expect(failedFineTunes.totalCount).toBe(3);
    expect((await page({ first: 20 })).nodes).toHaveLength(20);
    for (const bad of [{ first: 0 }, { first: 101 }, { after: 'not-a-cursor' }]) {
      expect(errorCode(await page(bad)), JSON.stringify(bad)).toBe('BAD_USER_INPUT');
    }
  });

  it('pages models, versions, keys and users the same way, with their filters', async () => {
    const { db } = platform.services;
    const baseModelId = await defaultBaseModelId(platform, key);
    const made: string[] = [];
    for (const kind of ['PRIVATE', 'PRIVATE_META', 'PRIVATE']) {
      made.push((await ok(gql(platform.url, 'mutation($b: ID!, $k: ModelKind!) { createModel(input: { name: "m", kind: $k, baseModelId: $b }) { id } }', { b: baseModelId, k: kind }, key))).createModel.id);
    }
    const walk = async (query: string, field: string, variables: Record<string, unknown> = {}, who = key) => {
      const ids: string[] = [];
      let after: string | null = null;
      do {
        const page: any = (await ok(gql(platform.url, query, { ...variables, after }, who)))[field];
        ids.push(...page.nodes.map((n: { id: string }) => n.id));
        after = page.pageInfo.hasNextPage ? page.pageInfo.endCursor : null;
      } while (after);
      return ids;
    };
    const MODELS = 'query($after: String, $kind: ModelKind) { models(first: 1, after: $after, kind: $kind) { nodes { id } pageInfo { hasNextPage endCursor } } }';
    expect(await walk(MODELS, 'models')).toEqual([...made].reverse());
    expect(await walk(MODELS, 'models', { kind: 'PRIVATE' })).toEqual([made[2], made[0]]);

    // A model's versions, nested, page by page past the first (loaded for all models at once).
    for (let i = 0; i < 3; i++) {
      const [{ headVersionId }] = await db.query('SELECT "headVersionId" FROM model WHERE id = $1', [made[1]]);
      await db.transaction((tx) => appendVersion(tx, made[1], headVersionId, { weightsKey: null, method: FineTuneMethod.LORA, contributionId: null }));
    }
    const VERSIONS = 'query($m: ID!, $after: String) { model(id: $m) { versions(first: 2, after: $after) { nodes { number } pageInfo { hasNextPage endCursor } totalCount } } }';
    const firstPage = (await ok(gql(platform.url, VERSIONS, { m: made[1] }, key))).model.versions;
    expect(firstPage).toMatchObject({ nodes: [{ number: 3 }, { number: 2 }], pageInfo: { hasNextPage: true }, totalCount: 3 });
    const secondPage = (await ok(gql(platform.url, VERSIONS, { m: made[1], after: firstPage.pageInfo.endCursor }, key))).model.versions;
    expect(secondPage).toMatchObject({ nodes: [{ number: 1 }], pageInfo: { hasNextPage: false } });
    const top = await ok(gql(platform.url, 'query($m: ID!) { modelVersions(modelId: $m, first: 1) { nodes { number } totalCount } }', { m: made[1] }, key));
    expect(top.modelVersions).toEqual({ nodes: [{ number: 3 }], totalCount: 3 });

    // Jobs by model and by date.
    const jobs = db.getRepository(Job);
    const onModel = await jobs.save({ type: JobType.GENERATE, ownerId: userId, status: JobStatus.QUEUED, params: { modelId: made[0] }, steps: 1 });
    const JOBS = 'query($m: ID, $since: DateTimeISO) { jobs(modelId: $m, createdAfter: $since, first: 100) { nodes { id } } }';
    expect((await ok(gql(platform.url, JOBS, { m: made[0] }, key))).jobs.nodes).toEqual([{ id: onModel.id }]);
    expect((await ok(gql(platform.url, JOBS, { since: onModel.createdAt.toISOString() }, key))).jobs.nodes).toEqual([{ id: onModel.id }]);

    // Keys, and users for admins.
    await ok(gql(platform.url, 'mutation { createApiKey(name: "second") { secret } }', {}, key));
    const keys = await ok(gql(platform.url, '{ apiKeys(first: 1) { nodes { name } pageInfo { hasNextPage } totalCount } }', {}, key));
    expect(keys.apiKeys).toEqual({ nodes: [{ name: 'second' }], pageInfo: { hasNextPage: true }, totalCount: 2 });
    const admin = await newAdminKey(platform, 'pages-admin@example.org');
    const USERS = 'query($after: String) { users(first: 1, after: $after, role: USER) { nodes { id } pageInfo { hasNextPage endCursor } } }';
    expect(await walk(USERS, 'users', {}, admin)).toEqual([userId]);
  });
});
