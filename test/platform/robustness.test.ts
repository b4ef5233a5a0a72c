import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Contribution, InstanceImage, Job, Model } from '../../src/entities';
import { WORKER_STOPPED_MESSAGE } from '../../src/services/job-lifecycle';
import { startWorker, type RunningWorker } from '../../src/worker/worker';
import { parseSafetensors, serializeSafetensors } from '../../src/engine/weights/safetensors';
import { hasFixtures, TINY_SD15 } from '../helpers/fixtures';
import { errorCode, gql, gqlUpload, ok, signUp, startTestPlatform, tempDir, type TestPlatform, type TestUser } from './helpers';
import { adminWithFixturePack, createModel } from './setup';

const START = 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } } }';
const UPLOAD = 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }';
const JOB = 'query($id: ID!) { job(id: $id) { status error warnings fineTune { contributionId } } }';

/** A synthetic photo, different per seed. */
async function photo(seed: number, size = 40): Promise<Uint8Array> {
  const background = { r: (seed * 70) % 256, g: 40 + seed * 10, b: 200 - seed * 30 };
  return new Uint8Array(await sharp({ create: { width: size, height: size, channels: 3, background } }).png().toBuffer());
}

/** A stalled job is one whose worker showed no life for this long; short, so the test waits little. */
const HEARTBEAT_TIMEOUT_SECONDS = '2';

/** `ROLE=worker npm start` as a real child process on the test platform's database and S3. */
function startWorkerProcess(platform: TestPlatform, dataDir: string): { kill(): Promise<void> } {
  const { endpoint, bucket, region, accessKeyId, secretAccessKey } = platform.s3;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: {
      ...process.env,
      ROLE: 'worker',
      DATA_DIR: dataDir,
      DATABASE_URL: platform.databaseUrl,
      S3_ENDPOINT: endpoint,
      S3_BUCKET: bucket,
      S3_REGION: region,
      S3_ACCESS_KEY_ID: accessKeyId,
      S3_SECRET_ACCESS_KEY: secretAccessKey,
      LOG_LEVEL: 'silent',
      JOB_HEARTBEAT_TIMEOUT_SECONDS: HEARTBEAT_TIMEOUT_SECONDS,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    // SIGKILL: no shutdown code runs, as when a machine or the OOM killer takes the process.
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

describe.skipIf(!hasFixtures)('platform robustness on the tiny-sd15 fixture pack', () => {
  let platform: TestPlatform;
  let url: string;
  let admin: string;
  let user: TestUser;
  let baseModelId: string;
  let workerData: { dir: string; remove: () => Promise<void> };
  let child: { kill(): Promise<void> };
  let sweeper: RunningWorker | undefined;

  const stage = async (seed: number): Promise<string> =>
    (await ok(gqlUpload(url, UPLOAD, {}, { bytes: await photo(seed), name: 'p.png', type: 'image/png' }, user.key))).uploadInstanceImage.id;
  const job = async (id: string) => (await ok(gql(url, JOB, { id }, user.key))).job;
  const finished = async (id: string) => {
    for (;;) {
      const current = await job(id);
      if (!['QUEUED', 'RUNNING'].includes(current.status)) return current;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  };

  beforeAll(async () => {
    // Jobs run in a separate worker process only, so killing it kills the job.
    // No retries: a job whose worker dies fails at once (resume.test.ts covers requeueing).
    platform = await startTestPlatform({ ROLE: 'api', JOB_HEARTBEAT_TIMEOUT_SECONDS: HEARTBEAT_TIMEOUT_SECONDS, JOB_MAX_RETRIES: '0' });
    workerData = await tempDir('bd-worker-');
    child = startWorkerProcess(platform, workerData.dir);
    url = platform.url;
    ({ admin, baseModelId } = await adminWithFixturePack(platform));
    user = await signUp(url, 'a@example.org');
  }, 120_000);
  afterAll(async () => {
    await sweeper?.stop();
    await child?.kill();
    await platform?.stop();
    await workerData?.remove();
  });

  it('shows the BIG split’s warnings on the fine-tune job', async () => {
    const modelId = await createModel(platform, user.key, { kind: 'PRIVATE_META', name: 'pets', baseModelId });
    const input = { target: 'PRIVATE_META', modelId, kind: 'OBJECT', steps: 2, learningRate: 1e-2, method: 'LORA', rank: 2 };
    const first = (await ok(gql(url, START, { input: { ...input, category: 'dog', instanceImageIds: [await stage(1)] } }, user.key))).startFineTune.job;
    expect(await finished(first.id)).toMatchObject({ status: 'SUCCEEDED', warnings: [] });

    // Cat's split has three parts (cat, dog, the dog concept's photos) but only two prior images.
    const second = (await ok(gql(url, START, { input: { ...input, category: 'cat', instanceImageIds: [await stage(2)] } }, user.key))).startFineTune.job;
    const done = await finished(second.id);
    expect(done.status).toBe('SUCCEEDED');
    expect(done.warnings).toHaveLength(1);
    expect(done.warnings[0]).toMatch(/2 prior images cannot cover all 3 parts/);
    const contribution = (await ok(gql(url, 'query($id: ID!) { contribution(id: $id) { priorSplit } }', { id: done.fineTune.contributionId }, user.key))).contribution;
    expect(done.warnings).toEqual(contribution.priorSplit.warnings);
  }, 300_000);

  it('fails a fine-tune whose worker was killed mid-job past its retries, withdrawing its contribution, from another worker', async () => {
    const modelId = await createModel(platform, user.key, { kind: 'PRIVATE_META', name: 'crash', baseModelId });
    const input = { target: 'PRIVATE_META', modelId, kind: 'OBJECT', learningRate: 1e-2, method: 'LORA', rank: 2 };
    const first = (await ok(gql(url, START, { input: { ...input, steps: 2, category: 'dog', instanceImageIds: [await stage(3)] } }, user.key))).startFineTune.job;
    expect(await finished(first.id)).toMatchObject({ status: 'SUCCEEDED' });
    const head = async () => (await platform.services.db.getRepository(Model).findOneByOrFail({ id: modelId })).headVersionId;
    const headBefore = await head();
    expect(headBefore).not.toBeNull();

    // Hundreds of class images to generate first: the job is still running when its worker dies.
    const photoId = await stage(4);
    const doomed = (await ok(gql(url, START, { input: { ...input, steps: 300, category: 'owl', instanceImageIds: [photoId] } }, user.key))).startFineTune.job;
    const jobs = platform.services.db.getRepository(Job);
    const { contributionId } = (await job(doomed.id)).fineTune;
    const contributions = platform.services.db.getRepository(Contribution);
    // Beating, and holding the model: its contribution is TRAINING.
    while (!(await jobs.findOneByOrFail({ id: doomed.id })).heartbeatAt || (await contributions.findOneByOrFail({ id: contributionId })).status !== 'TRAINING') {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await child.kill();
    await new Promise((resolve) => setTimeout(resolve, 2500)); // past the 2 s heartbeat timeout
    expect((await job(doomed.id)).status).toBe('RUNNING'); // nothing but a worker ends it

    sweeper = await startWorker(platform.services);
    const failed = await finished(doomed.id);
    expect(failed).toMatchObject({ status: 'FAILED', error: WORKER_STOPPED_MESSAGE });
    const contribution = await contributions.findOneByOrFail({ id: contributionId });
    expect(contribution.status).toBe('FAILED');
    expect((await platform.services.db.getRepository(InstanceImage).findOneByOrFail({ id: photoId })).conceptId).toBeNull();
    expect(await head()).toBe(headBefore);
  }, 300_000);

  it('refuses a pack with a mis-shaped or truncated checkpoint, naming the tensor, and registers nothing', async () => {
    const pack = join(TINY_SD15, 'pack');
    const upload = async (location: string, replace: Record<string, Uint8Array>) => {
      for (const entry of await readdir(pack, { recursive: true, withFileTypes: true })) {
        if (!entry.isFile()) continue;
        const file = relative(pack, join(entry.parentPath, entry.name));
        await platform.services.store.put(`${location}/${file}`, replace[file] ?? (await readFile(join(pack, file))));
      }
    };
    const register = (name: string, location: string) =>
      gql(url, 'mutation($n: String!, $l: String!) { registerBaseModel(input: { name: $n, storageLocation: $l }) { id } }', { n: name, l: location }, admin);

    // One bias of the UNet one element short: a valid file whose header no longer fits the config.
    const unetFile = 'unet/diffusion_pytorch_model.safetensors';
    const unet = parseSafetensors(await readFile(join(pack, unetFile)));
    const [name, bias] = [...unet].find(([, tensor]) => tensor.shape.length === 1)!;
    const shape = [bias.shape[0] - 1];
    unet.set(name, { ...bias, shape, bytes: bias.bytes.subarray(0, (bias.bytes.byteLength / bias.shape[0]) * shape[0]) });
    await upload('base-models/misshaped', { [unetFile]: serializeSafetensors(unet) });
    const misshaped = await register('misshaped', 'base-models/misshaped');
    expect(errorCode(misshaped)).toBe('BAD_USER_INPUT');
    expect(misshaped.errors![0].message).toContain(`${name} has shape [${shape}] but the model expects [${bias.shape}]`);

    // An upload cut short: the header is intact, the data it describes is not all there.
    const vaeFile = 'vae/diffusion_pytorch_model.safetensors';
    const vae = await readFile(join(pack, vaeFile));
    await upload('base-models/truncated', { [vaeFile]: vae.subarray(0, vae.byteLength - 4) });
    const truncated = await register('truncated', 'base-models/truncated');
    expect(errorCode(truncated)).toBe('BAD_USER_INPUT');
    expect(truncated.errors![0].message).toMatch(/vae\/diffusion_pytorch_model\.safetensors: .* runs past the end of the file/);

    const names = (await ok(gql(url, '{ baseModels { name } }', {}, admin))).baseModels.map((m: { name: string }) => m.name);
    expect(names).not.toContain('misshaped');
    expect(names).not.toContain('truncated');
  });
});
