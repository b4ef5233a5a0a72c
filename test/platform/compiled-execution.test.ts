import { execute, parse, type GraphQLSchema } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createContext } from '../../src/api/context';
import { buildAppSchema } from '../../src/api/schema';
import { FineTuneMethod, Image, Job, JobStatus, JobType } from '../../src/entities';
import { appendVersion } from '../../src/services/versions';
import { errorCode, gql, ok, signUp, startTestPlatform, type TestPlatform } from './helpers';
import { defaultBaseModelId } from './setup';

/**
 * The API runs operations compiled by graphql-jit (src/api/compiled-execution.ts). Whatever the
 * document's shape, the answer must be the one graphql-js's own executor gives on the same data.
 */
describe('compiled execution', () => {
  let platform: TestPlatform;
  let schema: GraphQLSchema;
  let key: string;

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    schema = await buildAppSchema();
    let userId: string;
    ({ key, userId } = await signUp(platform.url, 'compiled@example.org'));
    const baseModelId = await defaultBaseModelId(platform, key);
    const { db } = platform.services;
    for (const kind of ['PRIVATE', 'PRIVATE_META', 'PRIVATE_META']) {
      const modelId = (await ok(gql(platform.url, 'mutation($b: ID!, $k: ModelKind!) { createModel(input: { name: "m", kind: $k, baseModelId: $b }) { id } }', { b: baseModelId, k: kind }, key))).createModel.id;
      await ok(gql(platform.url, 'mutation($m: ID!) { createConcept(input: { modelId: $m, category: "dog", kind: OBJECT }) { id } }', { m: modelId }, key));
      await db.transaction((tx) => appendVersion(tx, modelId, null, { weightsKey: null, method: FineTuneMethod.LORA, contributionId: null }));
      const job = await db.getRepository(Job).save({ type: JobType.GENERATE, ownerId: userId, status: JobStatus.SUCCEEDED, params: { kind }, steps: 1 });
      await db.getRepository(Image).insert([0, 1].map((n) => ({ objectKey: `images/${job.id}/${n}.png`, jobId: job.id, seed: n, prompt: 'p', width: 64, height: 64 })));
    }
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  /** What graphql-js answers, run in this process on the same services as the viewer with `key`. */
  const interpreted = async (query: string, variables: Record<string, unknown>) => {
    const viewer = (await platform.services.keys.authenticate(`Bearer ${key}`)) ?? null;
    return execute({ schema, document: parse(query), variableValues: variables, contextValue: createContext(viewer, platform.services) });
  };

  const OPERATIONS: [string, Record<string, unknown>][] = [
    ['{ me { id email role } }', {}],
    [
      `query($withConcepts: Boolean!, $first: Int) {
         models(first: $first) {
           nodes { ...model newest: versions(first: 1) { nodes { id number } } concepts @include(if: $withConcepts) { id token category } }
           pageInfo { hasNextPage endCursor } totalCount
         }
       }
       fragment model on Model { __typename id name kind createdAt baseModel { id name } headVersion { id number method } }`,
      { withConcepts: true, first: 2 },
    ],
    ['query($skip: Boolean!) { jobs(first: 10) { edges { cursor node { id status params images @skip(if: $skip) { id width seed } } } } }', { skip: false }],
    ['query($skip: Boolean!) { jobs(first: 10) { nodes { id ... on Job { steps images @skip(if: $skip) { id } } } } }', { skip: true }],
  ];

  it('answers every operation as graphql-js does', async () => {
    for (const [query, variables] of OPERATIONS) {
      const served = await ok(gql(platform.url, query, variables, key));
      const expected = await interpreted(query, variables);
      expect(expected.errors).toBeUndefined();
      expect(served, query).toEqual(JSON.parse(JSON.stringify(expected.data)));
    }
  });

  it('keeps the codes of errors: a resolver’s, and variables that do not coerce', async () => {
    expect(errorCode(await gql(platform.url, '{ model(id: "00000000-0000-4000-8000-000000000000") { id } }', {}, key))).toBe('NOT_FOUND');
    expect(errorCode(await gql(platform.url, 'query($first: Int) { models(first: $first) { nodes { id } } }', { first: 'many' }, key))).toBe('BAD_USER_INPUT');
    expect(errorCode(await gql(platform.url, 'query($first: Int) { models(first: $first) { nodes { id } } }', { first: 0 }, key))).toBe('BAD_USER_INPUT');
  });
});
