import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Image, Job, JobStatus, JobType } from '../../src/entities';
import { errorCode, gql, ok, sharedServices, signUp, startTestPlatform, wsGql, type TestPlatform, type TestUser } from './helpers';
import { newAdminKey, userWithModel, type UserWithModel } from './setup';

/** What admins see of the platform: queue depth and age, each user's usage; and disabling an account. No worker runs. */
describe('admin insight', () => {
  let platform: TestPlatform;
  let url: string;
  let admin: string;
  let a: UserWithModel;
  let b: TestUser;

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    url = platform.url;
    admin = await newAdminKey(platform, 'root@example.org');
    a = await userWithModel(platform, 'usage-a@example.org');
    b = await signUp(url, 'usage-b@example.org');
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('shows queue depth and the oldest wait by job type, to admins only', async () => {
    const submitted: string[] = [];
    for (let i = 0; i < 2; i++) {
      submitted.push((await ok(gql(url, 'mutation($m: ID!) { generateImages(input: { modelId: $m, prompt: "x", steps: 1 }) { id createdAt } }', { m: a.modelId }, a.key))).generateImages.createdAt);
    }
    const { queueStats } = await ok(gql(url, '{ queueStats { type queued running oldestQueuedAt } }', {}, admin));
    expect(queueStats).toEqual([
      { type: 'FINETUNE', queued: 0, running: 0, oldestQueuedAt: null },
      { type: 'GENERATE', queued: 2, running: 0, oldestQueuedAt: submitted[0] },
    ]);
    expect(errorCode(await gql(url, '{ queueStats { queued } }', {}, a.key))).toBe('FORBIDDEN');
  });

  it('totals each user’s jobs, compute time, trained steps and images; a user sees only their own', async () => {
    const jobs = platform.services.db.getRepository(Job);
    const now = Date.now();
    const finished = (type: JobType, status: JobStatus, steps: number, seconds: number) =>
      jobs.save({ type, status, ownerId: b.userId, params: {}, steps, step: steps, startedAt: new Date(now - 100_000), finishedAt: new Date(now - 100_000 + seconds * 1000) });
    const generation = await finished(JobType.GENERATE, JobStatus.SUCCEEDED, 30, 12);
    await platform.services.db.getRepository(Image).insert([0, 1, 2].map((n) => ({ objectKey: `images/${generation.id}/${n}.png`, jobId: generation.id, seed: n, prompt: 'p', width: 8, height: 8 })));
    await finished(JobType.FINETUNE, JobStatus.SUCCEEDED, 500, 300);
    await finished(JobType.FINETUNE, JobStatus.FAILED, 200, 40); // ran, but trained nothing kept
    await jobs.save({ type: JobType.GENERATE, status: JobStatus.QUEUED, ownerId: b.userId, params: {}, steps: 5 }); // not run yet

    const own = (await ok(gql(url, '{ me { usage { jobsRun computeSeconds stepsTrained imagesMade } } }', {}, b.key))).me.usage;
    expect(own).toEqual({ jobsRun: 3, computeSeconds: 352, stepsTrained: 500, imagesMade: 3 });
    const listed = await ok(gql(url, '{ users(first: 100) { nodes { email usage { jobsRun imagesMade } } } }', {}, admin));
    const byEmail = Object.fromEntries(listed.users.nodes.map((u: { email: string; usage: unknown }) => [u.email, u.usage]));
    expect(byEmail['usage-b@example.org']).toEqual({ jobsRun: 3, imagesMade: 3 });
    expect(byEmail['usage-a@example.org']).toEqual({ jobsRun: 0, imagesMade: 0 });
  });

  it('disables an account: its keys are refused at once in every process, and work again once enabled', async () => {
    const other = await startTestPlatform({ ...sharedServices(platform), ROLE: 'api' });
    try {
      const me = (target: string) => gql(target, '{ me { email } }', {}, b.key);
      // Both processes have remembered B's key as valid.
      for (const target of [url, other.url]) expect((await ok(me(target))).me.email).toBe('usage-b@example.org');

      const SET = 'mutation($id: ID!, $d: Boolean!) { setUserDisabled(id: $id, disabled: $d) { id disabledAt } }';
      expect(errorCode(await gql(url, SET, { id: a.userId, d: true }, b.key))).toBe('FORBIDDEN');
      const adminId = (await ok(gql(url, '{ me { id } }', {}, admin))).me.id;
      expect(errorCode(await gql(url, SET, { id: adminId, d: true }, admin))).toBe('CONFLICT');
      const disabled = (await ok(gql(url, SET, { id: b.userId, d: true }, admin))).setUserDisabled;
      expect(disabled.disabledAt).not.toBeNull();

      const refused = await me(url);
      expect([refused.status, errorCode(refused)]).toEqual([401, 'UNAUTHENTICATED']);
      expect(refused.errors![0].message).toMatch(/disabled/);
      await expect.poll(async () => errorCode(await me(other.url)), { timeout: 5000 }).toBe('UNAUTHENTICATED');
      await expect(wsGql(url, '{ me { email } }', {}, b.key)).rejects.toThrow(/4403/);
      // A's account is untouched.
      expect((await ok(gql(url, '{ me { email } }', {}, a.key))).me.email).toBe('usage-a@example.org');

      expect((await ok(gql(url, SET, { id: b.userId, d: false }, admin))).setUserDisabled.disabledAt).toBeNull();
      expect((await ok(me(url))).me.email).toBe('usage-b@example.org');
      await expect.poll(async () => errorCode(await me(other.url)), { timeout: 5000 }).toBeUndefined();
    } finally {
      await other.stop();
    }
  });
});
