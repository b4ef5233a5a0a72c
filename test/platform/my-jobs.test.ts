import { parse, type ExecutionResult } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createContext } from '../../src/api/context';
import { buildAppSchema } from '../../src/api/schema';
import { subscribeSharingEvents } from '../../src/api/shared-events';
import { User } from '../../src/entities';
import { JOB_STATES_LISTENER } from '../../src/services/job-events';
import { claimJob, finishJob, recordJobProgress } from '../../src/services/job-lifecycle';
import { errorCode, gql, ok, startTestPlatform, wsGql, type TestPlatform } from './helpers';
import { userWithModel, type UserWithModel } from './setup';

const MY_JOBS = 'subscription { myJobs { jobId ownerId status step } }';

/**
 * `myJobs`: one feed of every state of all of a user's jobs. No worker runs: the lifecycle functions
 * the job runner calls stand in for it, and subscribers subscribe through the server's own subscribe
 * (as graphql-ws calls it), so each is following before the jobs move.
 */
describe('myJobs', () => {
  let platform: TestPlatform;
  let url: string;
  let a: UserWithModel;
  let b: UserWithModel;

  const generate = async (who: UserWithModel) =>
    (await ok(gql(url, 'mutation($m: ID!) { generateImages(input: { modelId: $m, prompt: "x", steps: 2 }) { id } }', { m: who.modelId }, who.key))).generateImages.id as string;
  const follow = async (who: { userId: string }) => {
    const viewer = await platform.services.db.getRepository(User).findOneByOrFail({ id: who.userId });
    const schema = await buildAppSchema();
    return (await subscribeSharingEvents({ schema, document: parse(MY_JOBS), contextValue: createContext(viewer, platform.services) })) as AsyncIterableIterator<ExecutionResult>;
  };
  const take = async (stream: AsyncIterableIterator<ExecutionResult>, n: number) => {
    const results: ExecutionResult[] = [];
    while (results.length < n) results.push((await stream.next()).value);
    return results;
  };
  const states = (results: ExecutionResult[]) => results.map((r) => (r.data as { myJobs: Record<string, unknown> }).myJobs);

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    url = platform.url;
    a = await userWithModel(platform, 'console-a@example.org');
    b = await userWithModel(platform, 'console-b@example.org');
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('streams every state of all of the user’s jobs, in order, past each job’s end, and nobody else’s', async () => {
    const mine = await follow(a);
    const theirs = await follow(b);
    const { db } = platform.services;

    const first = await generate(a);
    const second = await generate(a);
    const other = await generate(b);
    await claimJob(db, first);
    for (const step of [1, 2]) await recordJobProgress(db, first, { step, steps: 2 });
    await finishJob(db, first, async () => {});
    await ok(gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { id } }', { id: other }, b.key));
    await ok(gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { id } }', { id: second }, a.key));

    expect(states(await take(mine, 5))).toEqual([
      { jobId: first, ownerId: a.userId, status: 'RUNNING', step: 0 },
      { jobId: first, ownerId: a.userId, status: 'RUNNING', step: 1 },
      { jobId: first, ownerId: a.userId, status: 'RUNNING', step: 2 },
      { jobId: first, ownerId: a.userId, status: 'SUCCEEDED', step: 2 },
      { jobId: second, ownerId: a.userId, status: 'CANCELED', step: 0 },
    ]);
    expect(states(await take(theirs, 1))).toEqual([{ jobId: other, ownerId: b.userId, status: 'CANCELED', step: 0 }]);

    // A lost listening connection may have lost states: the feed says so, with CONFLICT, and ends.
    await db.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [JOB_STATES_LISTENER]);
    const [interrupted] = await take(mine, 1);
    expect(interrupted.errors?.[0].message).toMatch(/interrupted/);
    expect(interrupted.errors?.[0].originalError).toMatchObject({ code: 'CONFLICT' });
    expect((await mine.next()).done).toBe(true);
    await theirs.return!();
  });

  it('refuses anonymous callers', async () => {
    expect(errorCode(await wsGql(url, MY_JOBS))).toBe('UNAUTHENTICATED');
  });
});
