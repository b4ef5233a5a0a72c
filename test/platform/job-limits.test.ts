import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { Image, Job, JobType, User } from '../../src/entities';
import { errorCode, gql, ok, startTestPlatform, type TestPlatform } from './helpers';
import { userWithModel } from './setup';

/** Per-user limits on work: jobs queued or running at once, and jobs started per minute. No worker runs, so jobs stay QUEUED. */
describe('job limits per user', () => {
  let platform: TestPlatform;
  let modelOf: Record<string, string>;
  const keys: Record<string, string> = {};

  const generate = (who: string) =>
    gql(platform.url, 'mutation($m: ID!) { generateImages(input: { modelId: $m, prompt: "x", steps: 1 }) { id } }', { m: modelOf[who] }, keys[who]);

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api', MAX_ACTIVE_JOBS_PER_USER: '5', MAX_JOBS_PER_MINUTE_PER_USER: '8', MAX_IMAGES_PER_DAY_PER_USER: '10' });
    modelOf = {};
    for (const who of ['a', 'b', 'c', 'd']) {
      ({ key: keys[who], modelId: modelOf[who] } = await userWithModel(platform, `${who}@limits.example.org`));
    }
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('admits exactly the limit of concurrent submissions, then QUOTA_EXCEEDED, then RATE_LIMITED', async () => {
    const burst = await Promise.all(Array.from({ length: 10 }, () => generate('a')));
    const admitted = burst.filter((r) => !r.errors).map((r) => r.data!.generateImages.id as string);
    expect(admitted).toHaveLength(5);
    expect(burst.filter((r) => r.errors).map(errorCode)).toEqual(Array(5).fill('QUOTA_EXCEEDED'));
    expect(errorCode(await generate('b'))).toBeUndefined(); // another user's limits are their own

    const cancel = (id: string) => ok(gql(platform.url, 'mutation($id: ID!) { cancelJob(id: $id) { status } }', { id }, keys.a));
    for (const id of admitted.slice(0, 3)) await cancel(id);
    const more = await Promise.all(Array.from({ length: 3 }, () => generate('a')));
    expect(more.map(errorCode)).toEqual([undefined, undefined, undefined]); // 5 active again, 8 started this minute
    expect(errorCode(await generate('a'))).toBe('QUOTA_EXCEEDED');
    await cancel(admitted[3]);
    const refused = await generate('a');
    expect(errorCode(refused)).toBe('RATE_LIMITED');
    expect(refused.errors![0].message).toMatch(/8 jobs in the last minute/);
  });

  it('counts the images made in the last day and those on the way against MAX_IMAGES_PER_DAY_PER_USER', async () => {
    const images = (n: number) =>
      gql(platform.url, 'mutation($m: ID!, $n: Int!) { generateImages(input: { modelId: $m, prompt: "x", steps: 1, numImages: $n }) { id } }', { m: modelOf.c, n }, keys.c);
    const eight = (await ok(images(8))).generateImages.id;
    const refused = await images(3);
    expect(errorCode(refused)).toBe('QUOTA_EXCEEDED');
    expect(refused.errors![0].message).toMatch(/0 images in the last 24 hours and have 8 on the way/);
    expect(errorCode(await images(2))).toBeUndefined();

    // The 8 were made (a worker would record them so), the 2 canceled: 8 made, 0 on the way.
    const { db } = platform.services;
    await db.query(`UPDATE job SET status = 'CANCELED' WHERE "ownerId" = (SELECT "ownerId" FROM job WHERE id = $1)`, [eight]);
    await db.query(`UPDATE job SET status = 'SUCCEEDED' WHERE id = $1`, [eight]);
    await db.getRepository(Image).insert(Array.from({ length: 8 }, (_, n) => ({ objectKey: `images/${eight}/${n}.png`, jobId: eight, seed: n, prompt: 'x', width: 8, height: 8 })));
    expect(errorCode(await images(3))).toBe('QUOTA_EXCEEDED');
    expect(errorCode(await images(2))).toBeUndefined();
    // Made more than a day ago, they no longer count.
    await db.query(`UPDATE image SET "createdAt" = now() - interval '25 hours' WHERE "jobId" = $1`, [eight]);
    expect(errorCode(await images(8))).toBeUndefined();

    // Past the limit, the day's images are counted only as far as the limit: the refusal says so.
    await db.query(`UPDATE job SET status = 'CANCELED' WHERE "ownerId" = (SELECT "ownerId" FROM job WHERE id = $1)`, [eight]);
    await db.query(`UPDATE image SET "createdAt" = now() WHERE "jobId" = $1`, [eight]);
    await db.getRepository(Image).insert(Array.from({ length: 8 }, (_, n) => ({ objectKey: `images/${eight}/more-${n}.png`, jobId: eight, seed: n, prompt: 'x', width: 8, height: 8 })));
    const pastLimit = await images(1);
    expect(errorCode(pastLimit)).toBe('QUOTA_EXCEEDED');
    expect(pastLimit.errors![0].message).toMatch(/more than 10 images in the last 24 hours and have 0 on the way/);
  });

  it('admits the submissions that arrive while a commit is in flight as one group, in order of arrival', async () => {
    const { db, admissions } = platform.services;
    const user = await db.getRepository(User).findOneByOrFail({ email: 'd@limits.example.org' });
    const ids = Array.from({ length: 8 }, () => randomUUID());
    const outcomes = await Promise.allSettled(ids.map((id) =>
      admissions.submit(user, { job: { id, type: JobType.GENERATE, params: { modelId: modelOf.d, numImages: 1 }, steps: 1 }, images: 1, storageBytes: 0, webhook: null })));
    // The limit (5 active) admits the first five; the rest are refused and leave nothing behind.
    expect(outcomes.map((o) => o.status)).toEqual([...Array(5).fill('fulfilled'), ...Array(3).fill('rejected')]);
    expect(outcomes.slice(5).map((o) => (o as PromiseRejectedResult).reason.code)).toEqual(Array(3).fill('QUOTA_EXCEEDED'));
    const rows = await db.getRepository(Job).find({ where: ids.map((id) => ({ id })) });
    expect(rows.map((r) => r.id).sort()).toEqual(ids.slice(0, 5).sort());
    const [{ queued }] = await db.query('SELECT count(*)::int AS queued FROM pgboss.job WHERE id = ANY($1::uuid[])', [ids]);
    expect(queued).toBe(5);
    // The first went alone; the other seven arrived during its commit and went in one transaction (one now()).
    const createdAt = new Map(rows.map((r) => [r.id, r.createdAt.getTime()]));
    expect(createdAt.get(ids[1])).not.toBe(createdAt.get(ids[0]));
    expect(new Set(ids.slice(1, 5).map((id) => createdAt.get(id))).size).toBe(1);
  });
});
