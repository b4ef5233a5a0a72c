import { pino } from 'pino';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config';
import { Job } from '../../src/entities';
import { startPlatform, type RunningPlatform } from '../../src/main';
import { hasFixtures } from '../helpers/fixtures';
import { errorCode, followJob, gql, type GraphQLResponse, JOB_UPDATES, type JobUpdate, ok, signUp, startTestPlatform, tempDir, type TestPlatform, type TestUser } from './helpers';
import { adminWithFixturePack, createModel } from './setup';

const GENERATE = 'mutation($input: GenerateImagesInput!) { generateImages(input: $input) { id status } }';

const follow = (url: string, key: string | undefined, jobId: string, onUpdate?: (u: JobUpdate) => void) => followJob<JobUpdate>(url, key, JOB_UPDATES, jobId, onUpdate);

describe.skipIf(!hasFixtures)('image generation on the tiny-sd15 fixture pack', () => {
  let platform: TestPlatform;
  let url: string;
  let origin: string;
  let admin: string;
  let a: TestUser;
  let b: TestUser;
  let modelId: string;

  const generate = (input: Record<string, unknown>, key = a.key) => gql(url, GENERATE, { input: { modelId, ...input } }, key);
  const download = (path: string, key?: string) =>
    fetch(origin + path, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  const jobCount = () => platform.services.db.getRepository(Job).count();

  beforeAll(async () => {
    platform = await startTestPlatform();
    url = platform.url;
    origin = new URL(url).origin;
    const pack = await adminWithFixturePack(platform);
    expect(pack.architecture).toBe('stable-diffusion');
    admin = pack.admin;
    a = await signUp(url, 'a@example.org');
    b = await signUp(url, 'b@example.org');
    modelId = await createModel(platform, a.key, { name: 'mine', baseModelId: pack.baseModelId });
  }, 120_000);
  afterAll(() => platform?.stop());

  it('refuses to register a pack that does not load, and non-admins', async () => {
    const missing = await gql(url, 'mutation { registerBaseModel(input: { name: "x", storageLocation: "base-models/nothing" }) { id } }', {}, admin);
    expect(errorCode(missing)).toBe('BAD_USER_INPUT');
    expect(missing.errors![0].message).toMatch(/model_index\.json/);
    // A pack missing its UNet weights: the configs load, the weights do not.
    for (const file of ['model_index.json', 'scheduler/scheduler_config.json', 'unet/config.json']) {
      await platform.services.store.put(`base-models/broken/${file}`, await platform.services.store.get(`base-models/tiny-sd15/${file}`));
    }
    const broken = await gql(url, 'mutation { registerBaseModel(input: { name: "y", storageLocation: "base-models/broken" }) { id } }', {}, admin);
    expect(errorCode(broken)).toBe('BAD_USER_INPUT');
    const escape = await gql(url, 'mutation { registerBaseModel(input: { name: "z", storageLocation: "../tiny-sd15" }) { id } }', {}, admin);
    expect(errorCode(escape)).toBe('BAD_USER_INPUT');
    const byUser = await gql(url, 'mutation { registerBaseModel(input: { name: "w", storageLocation: "base-models/tiny-sd15" }) { id } }', {}, a.key);
    expect(errorCode(byUser)).toBe('FORBIDDEN');
    const names = (await ok(gql(url, '{ baseModels { name } }', {}, a.key))).baseModels.map((m: { name: string }) => m.name);
    expect(names.sort()).toEqual(['bundled-tiny-sd', 'tiny-sd15']);
  });

  it('streams progress to a subscriber, then SUCCEEDED with PNGs the owner downloads', async () => {
    const job = (await ok(generate({ prompt: 'a lnl painting of a sks dog', steps: 4, seed: 42, numImages: 2, scheduler: 'DDIM' }))).generateImages;
    expect(job.status).toBe('QUEUED');
    const updates = await follow(url, a.key, job.id);
    const last = updates.at(-1)!;
    expect(last).toMatchObject({ jobId: job.id, status: 'SUCCEEDED', progress: 1, step: 4, steps: 4, error: null });
    expect(last.imageIds).toHaveLength(2);
    const running = updates.filter((u) => u.status === 'RUNNING');
    expect(running.length).toBeGreaterThan(0);
    const steps = running.map((u) => u.step);
    expect(steps).toEqual([...steps].sort((x, y) => x - y));
    expect(Math.max(...steps)).toBeGreaterThan(0);

    const images = (await ok(gql(url, 'query($id: ID!) { job(id: $id) { images { id url width height seed prompt } } }', { id: job.id }, a.key))).job.images;
    expect(images.map((i: { id: string }) => i.id)).toEqual(last.imageIds);
    for (const image of images) {
      expect(image).toMatchObject({ width: 32, height: 32, seed: 42, prompt: 'a lnl painting of a sks dog' });
      const response = await download(image.url, a.key);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('image/png');
      const { info } = await sharp(Buffer.from(await response.arrayBuffer())).raw().toBuffer({ resolveWithObject: true });
      expect([info.width, info.height, info.channels]).toEqual([32, 32, 3]);
    }
  });

  it('makes identical PNG bytes from the same seed, and other bytes from another', async () => {
    const run = async (seed: number) => {
      const job = (await ok(generate({ prompt: 'a sks dog', steps: 3, seed, width: 32, height: 32 }))).generateImages;
      const last = (await follow(url, a.key, job.id)).at(-1)!;
      expect(last.status).toBe('SUCCEEDED');
      return Buffer.from(await (await download(`/images/${last.imageIds[0]}`, a.key)).arrayBuffer());
    };
    const first = await run(7);
    const again = await run(7);
    const other = await run(8);
    expect(again.equals(first)).toBe(true);
    expect(other.equals(first)).toBe(false);
  });

  it('refuses bad input with BAD_USER_INPUT and writes no job', async () => {
    const before = await jobCount();
    for (const input of [
      { prompt: '' },
      { prompt: 'x', steps: 0 },
      { prompt: 'x', width: 30 },
      { prompt: 'x', numImages: 9 },
      { prompt: 'x', guidanceScale: -1 },
      { prompt: 'x', seed: 2 ** 32 },
      { prompt: 'x', versionId: '00000000-0000-0000-0000-000000000000' },
      { prompt: 'x', modelId: 'not-an-id' },
    ]) {
      const response = await generate(input);
      expect(errorCode(response), JSON.stringify(input)).toBe('BAD_USER_INPUT');
    }
    expect(errorCode(await generate({ prompt: 'x', scheduler: 'NOPE' }))).toBe('BAD_USER_INPUT');
    // Checked against the model before queueing, by the rule the worker's pipeline applies: the bundled
    // model's sides are multiples of 32 (VAE factor 8, UNet factor 4); the fixture's, of 4.
    const baseModels = (await ok(gql(url, '{ baseModels { id name resolution sizeMultiple } }', {}, a.key))).baseModels;
    expect(baseModels.map(({ name, resolution, sizeMultiple }: any) => ({ name, resolution, sizeMultiple }))).toEqual([
      { name: 'bundled-tiny-sd', resolution: 64, sizeMultiple: 32 },
      { name: 'tiny-sd15', resolution: 32, sizeMultiple: 4 },
    ]);
    const bundledId = baseModels.find((m: { name: string }) => m.name === 'bundled-tiny-sd').id;
    const onBundled = await createModel(platform, a.key, { name: 'sizes', baseModelId: bundledId });
    const tooSmall = await generate({ modelId: onBundled, prompt: 'x', width: 8, height: 8 });
    expect(errorCode(tooSmall)).toBe('BAD_USER_INPUT');
    expect(tooSmall.errors![0].message).toBe('input: width 8 must be a multiple of 8 and of 32 for this model');
    expect(errorCode(await generate({ prompt: 'x', width: 8, height: 8, steps: 1 }))).toBeUndefined();
    expect(await jobCount()).toBe(before + 1);
  });

  it('fails a job whose weights are gone with a safe message', async () => {
    // A model on the bundled base model, whose UNet weights then vanish from the store.
    const bundled = (await ok(gql(url, '{ baseModels { id name storageLocation } }', {}, a.key))).baseModels.find(
      (m: { name: string }) => m.name === 'bundled-tiny-sd',
    );
    await platform.services.store.delete(`${bundled.storageLocation}/unet/diffusion_pytorch_model.safetensors`);
    const broken = await createModel(platform, a.key, { name: 'broken', baseModelId: bundled.id });
    const job = (await ok(generate({ modelId: broken, prompt: 'x', steps: 2 }))).generateImages;
    const last = (await follow(url, a.key, job.id)).at(-1)!;
    expect(last).toMatchObject({ status: 'FAILED', error: 'Generation failed', imageIds: [] });
  });

  it('cancels a running job between steps and a queued one before it starts', async () => {
    let cancelRunning: Promise<GraphQLResponse> | undefined;
    const slow = { prompt: 'a sks dog', steps: 200, width: 64, height: 64, numImages: 4 };
    const running = (await ok(generate(slow))).generateImages;
    const queued = (await ok(generate(slow))).generateImages; // one job at a time per worker: this one waits
    const cancelQueued = await gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { status } }', { id: queued.id }, a.key);
    expect(cancelQueued.data?.cancelJob.status).toBe('CANCELED');
    const updates = await follow(url, a.key, running.id, (u) => {
      if (u.status === 'RUNNING' && u.step > 0 && !cancelRunning) {
        cancelRunning = gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { status } }', { id: running.id }, a.key);
      }
    });
    expect((await cancelRunning)?.data?.cancelJob.status).toBe('CANCELED');
    const last = updates.at(-1)!;
    expect(last.status).toBe('CANCELED');
    expect(last.imageIds).toEqual([]);
    // The worker stopped soon after: far from all 200 steps.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const row = await platform.services.db.getRepository(Job).findOneByOrFail({ id: running.id });
    expect(row.status).toBe('CANCELED');
    expect(row.step).toBeLessThan(200);
    const never = await platform.services.db.getRepository(Job).findOneByOrFail({ id: queued.id });
    expect([never.status, never.step, never.startedAt]).toEqual(['CANCELED', 0, null]);
    expect(errorCode(await gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { status } }', { id: running.id }, a.key))).toBe('CONFLICT');
  }, 60_000);

  it("keeps A's jobs and images from B and from anonymous callers", async () => {
    const job = (await ok(generate({ prompt: 'private', steps: 2, seed: 1 }))).generateImages;
    const last = (await follow(url, a.key, job.id)).at(-1)!;
    const imagePath = `/images/${last.imageIds[0]}`;

    expect(errorCode(await gql(url, 'query($id: ID!) { job(id: $id) { id } }', { id: job.id }, b.key))).toBe('NOT_FOUND');
    expect(errorCode(await gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { id } }', { id: job.id }, b.key))).toBe('NOT_FOUND');
    expect(errorCode(await gql(url, 'query($id: ID!) { image(id: $id) { id } }', { id: last.imageIds[0] }, b.key))).toBe('NOT_FOUND');
    await expect(follow(url, b.key, job.id)).rejects.toMatchObject({ errors: [{ extensions: { code: 'NOT_FOUND' } }] });
    expect(errorCode(await generate({ prompt: 'on your model' }, b.key))).toBe('NOT_FOUND');

    expect((await download(imagePath, b.key)).status).toBe(404);
    expect((await download(imagePath)).status).toBe(401);
    expect((await download(imagePath, 'bd_not-a-real-key')).status).toBe(401);
    expect((await download('/images/not-an-id', a.key)).status).toBe(404);
    expect(errorCode(await gql(url, GENERATE, { input: { modelId, prompt: 'anonymous' } }))).toBe('UNAUTHENTICATED');
    await expect(follow(url, undefined, job.id)).rejects.toMatchObject({ errors: [{ extensions: { code: 'UNAUTHENTICATED' } }] });

    // An admin sees everyone's.
    expect((await download(imagePath, admin)).status).toBe(200);
    expect((await follow(url, admin, job.id)).at(-1)!.status).toBe('SUCCEEDED');
  });

  describe('with a second worker process sharing the database and object store', () => {
    let worker: RunningPlatform;
    let data: Awaited<ReturnType<typeof tempDir>>;

    beforeAll(async () => {
      data = await tempDir('bd-worker-');
      const { s3 } = platform;
      const config = loadConfig({
        ROLE: 'worker',
        DATA_DIR: data.dir,
        DATABASE_URL: platform.databaseUrl,
        S3_ENDPOINT: s3.endpoint,
        S3_BUCKET: s3.bucket,
        S3_ACCESS_KEY_ID: s3.accessKeyId,
        S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      });
      worker = await startPlatform(config, pino({ level: 'silent' }));
      expect(worker.url).toBeNull();
    }, 60_000);
    afterAll(async () => {
      await worker?.stop();
      await data?.remove();
    });

    it('runs jobs in both workers at once', async () => {
      const slow = { prompt: 'a sks dog', steps: 40, width: 64, height: 64, numImages: 2 };
      const jobs = [(await ok(generate(slow))).generateImages.id, (await ok(generate(slow))).generateImages.id];
      let bothRunning = false;
      const seen = new Map<string, string>();
      const results = await Promise.all(
        jobs.map((id) =>
          follow(url, a.key, id, (u) => {
            seen.set(id, u.status);
            if (jobs.every((j) => seen.get(j) === 'RUNNING')) bothRunning = true;
          }),
        ),
      );
      expect(results.map((updates) => updates.at(-1)!.status)).toEqual(['SUCCEEDED', 'SUCCEEDED']);
      expect(bothRunning).toBe(true);
    }, 120_000);
  });
});
