import { randomBytes } from 'node:crypto';
import sharp from 'sharp';
import type { EntityManager } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageCounters1796621335895 } from '../../migrations/1796621335895-UsageCounters';
import { storedBytesOf } from '../../src/services/storage-quota';
import { gql, gqlUpload, ok, signUp, startTestPlatform, type TestPlatform, type TestUser } from './helpers';
import { createModel, defaultBaseModelId, newAdminKey } from './setup';

const UNLIMITED = 1_000_000_000;

/** What admission and the storage check read, per user: job_admissions()'s counts and the stored bytes. */
async function counted(tx: EntityManager): Promise<unknown[]> {
  const rows: { userId: string }[] = await tx.query(
    `SELECT u.id AS "userId", a.active, a.recent, a.coming, a.made
       FROM "user" u, job_admissions(u.id, '{0}', $1, $1, $1) a ORDER BY u.id`,
    [UNLIMITED],
  );
  const stored = await storedBytesOf(tx, rows.map((r) => r.userId));
  return rows.map((row) => ({ ...row, stored: stored.get(row.userId) }));
}

/**
 * The same, counted from the rows, by the rules the counters keep: jobs queued or running; jobs created in
 * the current whole second and the 60 before it; images on the way; images made (previews aside) in the
 * current whole minute and the 1,440 before it; bytes of photos, of images of the user's jobs and of
 * versions of the user's models.
 */
const RECOUNTED = `
  SELECT u.id AS "userId",
         (SELECT count(*)::int FROM job WHERE "ownerId" = u.id AND status IN ('QUEUED', 'RUNNING')) AS active,
         (SELECT count(*)::int FROM job WHERE "ownerId" = u.id
             AND date_trunc('second', "createdAt") >= date_trunc('second', now()) - interval '60 seconds') AS recent,
         (SELECT coalesce(sum((params->>'numImages')::int), 0)::int FROM job
           WHERE "ownerId" = u.id AND status IN ('QUEUED', 'RUNNING') AND type = 'GENERATE') AS coming,
         (SELECT count(*)::int FROM image i JOIN job j ON j.id = i."jobId" WHERE j."ownerId" = u.id AND i."previewStep" IS NULL
             AND date_trunc('minute', i."createdAt") >= date_trunc('minute', now()) - interval '1 day') AS made,
         ((SELECT coalesce(sum(bytes), 0) FROM instance_image WHERE "ownerId" = u.id)
        + (SELECT coalesce(sum(i.bytes), 0) FROM image i JOIN job j ON j.id = i."jobId" WHERE j."ownerId" = u.id)
        + (SELECT coalesce(sum(v.bytes), 0) FROM model_version v JOIN model m ON m.id = v."modelId" WHERE m."ownerId" = u.id))::float AS stored
    FROM "user" u ORDER BY u.id`;

/** Triggers keep the counters admission reads (migration UsageCounters); here they are held to the rows after real work. */
describe('usage counters', () => {
  let platform: TestPlatform;
  let baseModelId: string;

  /** Counters and recount in one snapshot: the worker may commit at any moment, counters with the rows they count. */
  const countersAndRecount = () =>
    platform.services.db.transaction('REPEATABLE READ', async (tx) => ({ counters: await counted(tx), recount: await tx.query(RECOUNTED) }));
  const expectCountersRight = async () => {
    const { counters, recount } = await countersAndRecount();
    expect(counters).toEqual(recount);
    return counters as { userId: string; active: number; coming: number; made: number; stored: number }[];
  };

  const png = (width: number) => sharp(randomBytes(width * width * 3), { raw: { width, height: width, channels: 3 } }).png().toBuffer();
  const upload = async (user: TestUser) =>
    (await ok(gqlUpload(platform.url, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: await png(64), name: 'p.png', type: 'image/png' }, user.key)))
      .uploadInstanceImage.id as string;
  const generate = async (user: TestUser, modelId: string, input: Record<string, unknown>) =>
    (await ok(gql(platform.url, 'mutation($input: GenerateImagesInput!) { generateImages(input: $input) { id } }', { input: { modelId, prompt: 'x', steps: 1, ...input } }, user.key)))
      .generateImages.id as string;
  const fineTune = async (user: TestUser, photo: string, extra: Record<string, unknown> = {}) =>
    (await ok(gql(platform.url, 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } model { id } } }', {
      input: { target: 'PRIVATE', baseModelId, category: 'hat', kind: 'OBJECT', method: 'LORA', steps: 1, instanceImageIds: [photo], ...extra },
    }, user.key))).startFineTune as { job: { id: string }; model: { id: string } };
  const job = async (user: TestUser, id: string) =>
    (await ok(gql(platform.url, 'query($id: ID!) { job(id: $id) { status step images { id } } }', { id }, user.key))).job as { status: string; step: number; images: { id: string }[] };
  const until = async (user: TestUser, id: string, done: (j: Awaited<ReturnType<typeof job>>) => boolean) => {
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 200))) {
      const j = await job(user, id);
      if (done(j)) return j;
    }
    throw new Error(`job ${id} never got there`);
  };
  const settled = (user: TestUser, id: string) => until(user, id, (j) => !['QUEUED', 'RUNNING'].includes(j.status));
  const cancel = (user: TestUser, id: string) => ok(gql(platform.url, 'mutation($id: ID!) { cancelJob(id: $id) { status } }', { id }, user.key));

  beforeAll(async () => {
    platform = await startTestPlatform();
    baseModelId = await defaultBaseModelId(platform, await newAdminKey(platform, 'root@usage.example.org'));
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('equal the sums recounted from the rows after generations, fine-tunes, cancellations, a failure and deletions', async () => {
    const a = await signUp(platform.url, 'a@usage.example.org');
    const b = await signUp(platform.url, 'b@usage.example.org');
    const { db, store } = platform.services;

    // Photos: three uploaded, one deleted.
    const photos = [await upload(a), await upload(a), await upload(a)];
    await ok(gql(platform.url, 'mutation($id: ID!) { deleteInstanceImage(id: $id) }', { id: photos[2] }, a.key));

    // Generations run to SUCCEEDED.
    const modelId = await createModel(platform, a.key);
    const made = [await generate(a, modelId, { numImages: 2 }), await generate(a, modelId, { numImages: 1 })];
    for (const id of made) expect((await settled(a, id)).status).toBe('SUCCEEDED');
    await expectCountersRight();

    // A slow one running and one queued behind it (one job at a time per worker), counted on the way, then canceled.
    const slow = await generate(a, modelId, { steps: 200, numImages: 4 });
    const queued = await generate(a, modelId, { numImages: 3 });
    await until(a, slow, (j) => j.status === 'RUNNING' && j.step > 0);
    const midway = (await expectCountersRight()).find((c) => c.userId === a.userId)!;
    expect([midway.active, midway.coming]).toEqual([2, 7]);
    await cancel(a, queued);
    await cancel(a, slow);
    expect((await settled(a, slow)).status).toBe('CANCELED');

    // A fine-tune with previews (stored, not made) to SUCCEEDED; one whose photo is gone from storage FAILS.
    const tuned = await fineTune(a, photos[0], { steps: 2, previewPrompts: ['p'], previewEvery: 1 });
    expect((await settled(a, tuned.job.id)).status).toBe('SUCCEEDED');
    const [{ objectKey }] = await db.query('SELECT "objectKey" FROM instance_image WHERE id = $1', [photos[1]]);
    await store.delete(objectKey);
    const failing = await fineTune(a, photos[1]);
    expect((await settled(a, failing.job.id)).status).toBe('FAILED');
    const [{ previews, versionBytes }] = await db.query(
      `SELECT (SELECT count(*)::int FROM image WHERE "jobId" = $1 AND "previewStep" IS NOT NULL) AS previews,
              (SELECT sum(bytes)::float FROM model_version WHERE "modelId" = $2) AS "versionBytes"`,
      [tuned.job.id, tuned.model.id],
    );
    expect(previews).toBeGreaterThan(0);
    expect(versionBytes).toBeGreaterThan(0);
    await expectCountersRight();

    // Deletions: an image, the fine-tuned model with its version and photo.
    const [image] = (await job(a, made[0])).images;
    await ok(gql(platform.url, 'mutation($id: ID!) { deleteImage(id: $id) }', { id: image.id }, a.key));
    await ok(gql(platform.url, 'mutation($id: ID!) { deleteModel(id: $id) }', { id: tuned.model.id }, a.key));

    // Another user's work, and one of their jobs deleted with its images (the API deletes no jobs: a cleanup would).
    const ofB = await createModel(platform, b.key);
    const kept = await generate(b, ofB, { numImages: 2 });
    const gone = await generate(b, ofB, { numImages: 1 });
    for (const id of [kept, gone]) expect((await settled(b, id)).status).toBe('SUCCEEDED');
    await db.query('DELETE FROM job WHERE id = $1', [gone]);

    const counters = await expectCountersRight();
    const ofA = counters.find((c) => c.userId === a.userId)!;
    // The work left something to count: 2 + 1 images made, one deleted; the photos, images and weights left.
    expect([ofA.active, ofA.coming, ofA.made]).toEqual([0, 0, 2]);
    expect(ofA.stored).toBeGreaterThan(0);
    // Admission folded every user's changes into their row: none left to sum.
    expect(await db.query('SELECT count(*)::int AS changes FROM user_usage_changes')).toEqual([{ changes: 0 }]);

    // A user deleted with everything they had: the cascade's triggers find their counters gone, and fail nothing.
    await db.query('DELETE FROM "user" WHERE id = $1', [b.userId]);
    for (const table of ['user_usage', 'user_job_starts', 'user_images_made']) {
      expect(await db.query(`SELECT * FROM ${table} WHERE "userId" = $1`, [b.userId])).toEqual([]);
    }
    await expectCountersRight();

    // The migration counts existing rows as the triggers do: undone and applied again, the same counters.
    const before = await countersAndRecount();
    const runner = db.createQueryRunner();
    try {
      await runner.startTransaction();
      const migration = new UsageCounters1796621335895();
      await migration.down(runner);
      await migration.up(runner);
      await runner.commitTransaction();
    } finally {
      await runner.release();
    }
    expect(await expectCountersRight()).toEqual(before.counters);
  }, 240_000);

  it('count a job against the minute for 60 to 61 s and an image against the day for 24 h to 24 h 1 min, by whole buckets', async () => {
    const { userId } = await signUp(platform.url, 'edges@usage.example.org');
    // One transaction, one now(): each edge exactly at its bucket's start, and a microsecond before.
    const runner = platform.services.db.createQueryRunner();
    try {
      await runner.startTransaction();
      const jobAt = async (createdAt: string) =>
        (await runner.query(`INSERT INTO job (type, status, "ownerId", "createdAt") VALUES ('GENERATE', 'SUCCEEDED', $1, ${createdAt}) RETURNING id`, [userId]))[0].id;
      const admission = async () =>
        (await runner.query('SELECT recent, made FROM job_admissions($1, $2, $3, $3, $3)', [userId, [0], UNLIMITED]))[0];
      await jobAt(`date_trunc('second', now()) - interval '60 seconds'`);
      await jobAt(`date_trunc('second', now()) - interval '60 seconds' - interval '1 microsecond'`);
      const made = await jobAt(`now() - interval '2 days'`);
      const imageAt = (createdAt: string, previewStep: number | null = null) =>
        runner.query(`INSERT INTO image ("objectKey", "jobId", seed, prompt, width, height, "previewStep", "createdAt") VALUES ('k', $1, 1, 'x', 8, 8, $2, ${createdAt})`, [made, previewStep]);
      await imageAt(`date_trunc('minute', now()) - interval '1 day'`);
      await imageAt(`date_trunc('minute', now()) - interval '1 day' - interval '1 microsecond'`);
      await imageAt('now()', 1); // a preview: not an image made
      expect(await admission()).toEqual({ recent: 1, made: 1 });
      // Moved out of their windows and back, they leave and come back.
      await runner.query(`UPDATE job SET "createdAt" = "createdAt" - interval '1 second' WHERE "ownerId" = $1 AND "createdAt" > now() - interval '1 day'`, [userId]);
      await runner.query(`UPDATE image SET "createdAt" = "createdAt" - interval '1 minute' WHERE "jobId" = $1`, [made]);
      expect(await admission()).toEqual({ recent: 0, made: 0 });
      await runner.query(`UPDATE image SET "createdAt" = now() WHERE "jobId" = $1`, [made]);
      expect(await admission()).toEqual({ recent: 0, made: 2 });
    } finally {
      await runner.rollbackTransaction();
      await runner.release();
    }
  });

  it('never make a finishing job and its owner’s next admission wait for each other (no deadlock)', async () => {
    const a = await signUp(platform.url, 'locks@usage.example.org');
    const modelId = await createModel(platform, a.key);
    const { db } = platform.services;
    const [{ id: jobId }] = await db.query(`INSERT INTO job (type, status, "ownerId") VALUES ('FINETUNE', 'RUNNING', $1) RETURNING id`, [a.userId]);
    // As a fine-tune finishes (its job done, then the model's row for the new version) while its owner
    // starts another on the same model (the model's row, then admission and the new job).
    const [finishing, starting] = [db.createQueryRunner(), db.createQueryRunner()];
    try {
      await finishing.startTransaction();
      await starting.startTransaction();
      await finishing.query(`UPDATE job SET status = 'SUCCEEDED' WHERE id = $1`, [jobId]);
      await starting.query('SELECT FROM model WHERE id = $1 FOR UPDATE', [modelId]);
      const started = (async () => {
        expect(await starting.query(`SELECT refusal FROM job_admissions($1, '{0}', 100, 100, 100)`, [a.userId])).toEqual([{ refusal: null }]);
        await starting.query(`INSERT INTO job (type, "ownerId") VALUES ('FINETUNE', $1)`, [a.userId]);
        await starting.commitTransaction();
      })();
      const finished = (async () => {
        await finishing.query('SELECT FROM model WHERE id = $1 FOR UPDATE', [modelId]);
        await finishing.commitTransaction();
      })();
      await Promise.all([started, finished]); // PostgreSQL would break a deadlock by failing one
    } finally {
      for (const runner of [finishing, starting]) {
        if (runner.isTransactionActive) await runner.rollbackTransaction();
        await runner.release();
      }
    }
    await expectCountersRight();
  });

  it('refuse to move a row to another owner, which would leave its share with the first', async () => {
    const a = await signUp(platform.url, 'owner-a@usage.example.org');
    const b = await signUp(platform.url, 'owner-b@usage.example.org');
    const modelId = await createModel(platform, a.key);
    const { db } = platform.services;
    await expect(db.query('UPDATE model SET "ownerId" = $2 WHERE id = $1', [modelId, b.userId])).rejects.toThrow('model.ownerId does not change');
    const [{ id }] = await db.query(`INSERT INTO job (type, "ownerId") VALUES ('GENERATE', $1) RETURNING id`, [a.userId]);
    await expect(db.query('UPDATE job SET "ownerId" = $2 WHERE id = $1', [id, b.userId])).rejects.toThrow('job.ownerId does not change');
    await db.query(`UPDATE job SET status = 'CANCELED' WHERE id = $1`, [id]);
  });
});
