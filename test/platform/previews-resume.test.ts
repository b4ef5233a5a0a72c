import sharp from 'sharp';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config';
import { Image } from '../../src/entities';
import { startPlatform, type RunningPlatform } from '../../src/main';
import { gql, gqlUpload, ok, signUp, tempDir } from './helpers';
import { defaultBaseModelId } from './setup';


/** A fine-tune whose worker stops mid-run (Ctrl-C) and resumes after a restart draws each preview round once. */
describe('training previews across a restart', () => {
  let data: Awaited<ReturnType<typeof tempDir>>;
  let platform: RunningPlatform;

  /** The platform on `data.dir`: stopping and starting it again keeps its database and bucket. */
  const start = async () => {
    const config = loadConfig({ DATA_DIR: data.dir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', BUNDLED_BASE_MODEL: 'tiny-random', FINETUNE_CHECKPOINT_STEPS: '0' });
    platform = await startPlatform(config, pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }));
  };

  beforeAll(async () => {
    data = await tempDir('bd-previews-resume-');
    await start();
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
    await data?.remove();
  });

  it('hands the job on at the stop and draws the rounds it had not drawn, none twice', async () => {
    const { key } = await signUp(platform.url!, 'resume@example.org');
    const baseModelId = await defaultBaseModelId(platform, key);
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#5a5' } }).png().toBuffer();
    const photo = (await ok(gqlUpload(platform.url!, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: png, name: 'p.png', type: 'image/png' }, key))).uploadInstanceImage.id;
    const jobId = (await ok(gql(platform.url!, 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } } }', {
      input: { target: 'PRIVATE', baseModelId, category: 'bag', kind: 'OBJECT', method: 'LORA', steps: 30, instanceImageIds: [photo], previewPrompts: ['a bag'], previewEvery: 5, previewSteps: 1 },
    }, key))).startFineTune.job.id;
    const drawn = async () => (await platform.services.db.getRepository(Image).findBy({ jobId })).map((i) => i.previewStep).sort((a, b) => a! - b!);
    for (const deadline = Date.now() + 90_000; (await drawn()).length < 2;) {
      if (Date.now() > deadline) throw new Error('no previews drawn');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const JOB = 'query($id: ID!) { job(id: $id) { status step startedAt } }';
    const before = (await ok(gql(platform.url!, JOB, { id: jobId }, key))).job;
    expect(before).toMatchObject({ status: 'RUNNING', step: expect.toBeOneOf([...Array(30).keys()]) });
    await platform.stop(); // drains: a checkpoint where the run stands, the job back in the queue
    await start();
    for (let status = 'QUEUED'; status !== 'SUCCEEDED';) {
      if (status === 'FAILED' || status === 'CANCELED') throw new Error(`the fine-tune ${status}`);
      await new Promise((resolve) => setTimeout(resolve, 300));
      status = (await ok(gql(platform.url!, 'query($id: ID!) { job(id: $id) { status } }', { id: jobId }, key))).job.status;
    }
    expect(await drawn()).toEqual([5, 10, 15, 20, 25, 30]);
    // Run again by a new claim after the restart, not finished before it.
    expect((await ok(gql(platform.url!, JOB, { id: jobId }, key))).job.startedAt).not.toBe(before.startedAt);
  }, 240_000);
});
