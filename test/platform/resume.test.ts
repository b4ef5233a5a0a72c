import { spawn } from 'node:child_process';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Job, ModelVersion } from '../../src/entities';
import { claimJob, failRunningJob, finishJob, recordJobProgress, requeueJob } from '../../src/services/job-lifecycle';
import { startWorker, type RunningWorker } from '../../src/worker/worker';
import { checkpointPrefix } from '../../src/worker/checkpoints';
import { followJob, gql, gqlUpload, ok, signUp, startTestPlatform, tempDir, type TestPlatform } from './helpers';
import { newAdminKey } from './setup';

const START = 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } } }';
const UPLOAD = 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }';
const UPDATES = 'subscription($id: ID!) { jobUpdated(jobId: $id) { status step } }';

/** Short, so a dead worker's job is taken back within seconds. */
const HEARTBEAT_TIMEOUT_SECONDS = '2';
const STEPS = 10;
const CHECKPOINT_STEPS = 2;
const ENV = { JOB_HEARTBEAT_TIMEOUT_SECONDS: HEARTBEAT_TIMEOUT_SECONDS, FINETUNE_CHECKPOINT_STEPS: String(CHECKPOINT_STEPS), FINETUNE_CHECKPOINTS_KEPT: '2' };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `ROLE=worker npm start` as a real child process on the test platform's database and S3. */
function startWorkerProcess(platform: TestPlatform, dataDir: string) {
  const { endpoint, bucket, region, accessKeyId, secretAccessKey } = platform.s3;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: {
      ...process.env, ...ENV, ROLE: 'worker', DATA_DIR: dataDir, DATABASE_URL: platform.databaseUrl, S3_ENDPOINT: endpoint, S3_BUCKET: bucket,
      S3_REGION: region, S3_ACCESS_KEY_ID: accessKeyId, S3_SECRET_ACCESS_KEY: secretAccessKey, LOG_LEVEL: 'silent',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    signal: async (signal: 'SIGKILL' | 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

const follow = (url: string, key: string, jobId: string) => followJob<{ status: string; step: number }>(url, key, UPDATES, jobId);

describe('fine-tunes survive their worker: SIGKILL and SIGTERM mid-training', () => {
  let platform: TestPlatform;
  let workerData: { dir: string; remove: () => Promise<void> };
  let user: { key: string };
  let baseModelId: string;
  let resolution: number;
  let reference: Uint8Array;
  let referenceModelId: string;
  let inProcess: RunningWorker | undefined;
  const children: ReturnType<typeof startWorkerProcess>[] = [];

  const photo = async (seed: number) => new Uint8Array(await sharp({
    create: { width: resolution + 8, height: resolution, channels: 3, background: { r: 60 * seed, g: 200 - 50 * seed, b: 90 } },
  }).png().toBuffer());
  /** The same request each time (new model, same photos, seed and identifier), so every run trains the same weights. */
  const submit = async (): Promise<string> => {
    const ids = [];
    for (const seed of [1, 2]) ids.push((await ok(gqlUpload(platform.url, UPLOAD, {}, { bytes: await photo(seed), name: 'p.png', type: 'image/png' }, user.key))).uploadInstanceImage.id);
    const input = { target: 'PRIVATE', baseModelId, category: 'dog', kind: 'OBJECT', instanceImageIds: ids, method: 'LORA', rank: 2, steps: STEPS, learningRate: 1e-2, seed: 7 };
    return (await ok(gql(platform.url, START, { input }, user.key))).startFineTune.job.id;
  };
  const row = (id: string) => platform.services.db.getRepository(Job).findOneByOrFail({ id });
  const until = async (condition: () => Promise<boolean>) => {
    while (!(await condition())) await sleep(100);
  };
  /** The stored weights of the version a finished fine-tune appended. */
  const weightsOf = async (jobId: string) => {
    const version = await platform.services.db.getRepository(ModelVersion).findOneByOrFail({ modelId: (await row(jobId)).params.modelId as string });
    return platform.services.store.get(version.weightsKey!);
  };
  const checkpoints = (jobId: string) => platform.services.store.list(checkpointPrefix(jobId));

  beforeAll(async () => {
    // Jobs run only where this test starts a worker.
    platform = await startTestPlatform({ ROLE: 'api', ...ENV });
    workerData = await tempDir('bd-resume-worker-');
    const admin = await newAdminKey(platform);
    user = await signUp(platform.url, 'a@example.org');
    const [base] = (await ok(gql(platform.url, '{ baseModels { id resolution } }', {}, admin))).baseModels;
    ({ id: baseModelId, resolution } = base);

    inProcess = await startWorker(platform.services);
    const jobId = await submit();
    await until(async () => (await row(jobId)).status === 'SUCCEEDED');
    reference = await weightsOf(jobId);
    referenceModelId = (await row(jobId)).params.modelId as string;
    await inProcess.stop();
    inProcess = undefined;
  }, 300_000);
  afterEach(async () => {
    await inProcess?.stop();
    inProcess = undefined;
  });
  afterAll(async () => {
    for (const child of children) await child.signal('SIGKILL');
    await platform?.stop();
    await workerData?.remove();
  });

  it('a worker whose job was taken back and claimed by another changes nothing of the new run', async () => {
    const { db, queue } = platform.services;
    const generate = 'mutation($m: ID!) { generateImages(input: { modelId: $m, prompt: "a dog", steps: 2 }) { id } }';
    const jobId = (await ok(gql(platform.url, generate, { m: referenceModelId }, user.key))).generateImages.id;
    const lost = (await claimJob(db, jobId))!;
    await sleep(10);
    expect(await requeueJob(db, queue, jobId, { staleSeconds: 0 })).toBe(true); // as a sweep does when the worker went silent
    const current = (await claimJob(db, jobId))!;
    expect(current.startedAt).not.toEqual(lost.startedAt);
    expect(await recordJobProgress(db, jobId, { step: 1, steps: 2 }, lost.startedAt!)).toBe(false);
    expect(await finishJob(db, jobId, async () => {}, lost.startedAt!)).toBe(false);
    expect(await failRunningJob(db, jobId, 'from the lost run', { claimedAt: lost.startedAt! })).toBe(false);
    expect(await requeueJob(db, queue, jobId, { claimedAt: lost.startedAt! })).toBe(false);
    expect(await row(jobId)).toMatchObject({ status: 'RUNNING', step: 0, retries: 1, startedAt: current.startedAt });
    expect(await recordJobProgress(db, jobId, { step: 1, steps: 2 }, current.startedAt!)).toBe(true);
    await ok(gql(platform.url, 'mutation($id: ID!) { cancelJob(id: $id) { id } }', { id: jobId }, user.key));
  });

  it('requeues a fine-tune whose worker was SIGKILLed; another worker resumes from its newest checkpoint to the same weights bit for bit', async () => {
    const child = startWorkerProcess(platform, workerData.dir);
    children.push(child);
    const jobId = await submit();
    const states = follow(platform.url, user.key, jobId);
    await until(async () => (await checkpoints(jobId)).length > 0);
    await child.signal('SIGKILL');
    const saved = await checkpoints(jobId);
    const newest = Number(saved[saved.length - 1].match(/(\d+)\.safetensors$/)![1]);
    expect((await row(jobId)).status).toBe('RUNNING');

    inProcess = await startWorker(platform.services);
    await until(async () => ['SUCCEEDED', 'FAILED'].includes((await row(jobId)).status));
    const done = await row(jobId);
    expect(done).toMatchObject({ status: 'SUCCEEDED', retries: 1 });
    expect(Buffer.from(await weightsOf(jobId)).equals(Buffer.from(reference))).toBe(true);
    await until(async () => (await checkpoints(jobId)).length === 0); // deleted once the version is recorded

    // Back to QUEUED once, then the second run's first step is the one after the newest checkpoint.
    const seen = await states;
    const requeued = seen.findIndex((state, i) => i > 0 && state.status === 'QUEUED');
    expect(requeued).toBeGreaterThan(0);
    expect(seen.slice(requeued).find((state) => state.step > 0)!.step).toBe(newest + 1);
  }, 300_000);

  it('a worker stopped by SIGTERM checkpoints where it stands and hands the job back, unretried; another finishes it to the same weights', async () => {
    const child = startWorkerProcess(platform, workerData.dir);
    children.push(child);
    const jobId = await submit();
    await until(async () => (await row(jobId)).step >= 3);
    await child.signal('SIGTERM');
    const handedBack = await row(jobId);
    expect(handedBack).toMatchObject({ status: 'QUEUED', retries: 0 });
    const saved = await checkpoints(jobId);
    expect(saved.length).toBeGreaterThan(0);
    // The drain's checkpoint is of the last step taken, not only the last multiple of CHECKPOINT_STEPS.
    const newest = Number(saved[saved.length - 1].match(/(\d+)\.safetensors$/)![1]);
    expect(newest).toBeGreaterThanOrEqual(3);

    const states = follow(platform.url, user.key, jobId);
    inProcess = await startWorker(platform.services);
    const seen = await states;
    expect(seen.at(-1)!.status).toBe('SUCCEEDED');
    expect(seen.find((s) => s.step > 0)!.step).toBe(newest + 1);
    expect(Buffer.from(await weightsOf(jobId)).equals(Buffer.from(reference))).toBe(true);
    await until(async () => (await checkpoints(jobId)).length === 0); // deleted once the version is recorded
  }, 300_000);

  it('retries a generation whose worker was SIGKILLed, from the start, to its images', async () => {
    const child = startWorkerProcess(platform, workerData.dir);
    children.push(child);
    const generate = 'mutation($m: ID!) { generateImages(input: { modelId: $m, prompt: "a dog", steps: 150, seed: 3 }) { id } }';
    const jobId = (await ok(gql(platform.url, generate, { m: referenceModelId }, user.key))).generateImages.id;
    await until(async () => (await row(jobId)).step >= 5);
    await child.signal('SIGKILL');
    inProcess = await startWorker(platform.services);
    await until(async () => ['SUCCEEDED', 'FAILED'].includes((await row(jobId)).status));
    expect(await row(jobId)).toMatchObject({ status: 'SUCCEEDED', retries: 1 });
    const images = (await ok(gql(platform.url, 'query($id: ID!) { job(id: $id) { images { id } } }', { id: jobId }, user.key))).job.images;
    expect(images).toHaveLength(1);
  }, 300_000);

  it('deletes the checkpoints of a fine-tune canceled mid-training', async () => {
    inProcess = await startWorker(platform.services);
    const jobId = await submit();
    await until(async () => (await checkpoints(jobId)).length > 0);
    await ok(gql(platform.url, 'mutation($id: ID!) { cancelJob(id: $id) { id } }', { id: jobId }, user.key));
    await until(async () => (await checkpoints(jobId)).length === 0); // by the worker's sweep
    expect((await row(jobId)).status).toBe('CANCELED');
  }, 120_000);
});
