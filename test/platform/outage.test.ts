import path from 'node:path';
import { pino } from 'pino';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InstanceImage, Job } from '../../src/entities';
import { startEmbeddedPostgres, type RunningPostgres } from '../../src/storage/embedded-postgres';
import { startEmbeddedS3, type RunningS3 } from '../../src/storage/embedded-s3';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { errorCode, gql, gqlUpload, startTestPlatform, tempDir, type TestPlatform } from './helpers';
import { userWithModel } from './setup';

const log = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const GENERATE = 'mutation($m: ID!, $seed: Float) { generateImages(input: { modelId: $m, prompt: "a dog", steps: 20, seed: $seed }) { id } }';
const HEALTH = '{ health { ok database objectStore } }';

/**
 * The platform over an embedded PostgreSQL and S3 that the test stops and starts on the same ports and
 * data, as an operator's restart or a crash and recovery would.
 */
describe('PostgreSQL and S3 outages under a running platform', () => {
  let data: Awaited<ReturnType<typeof tempDir>>;
  let postgres: RunningPostgres;
  let s3: RunningS3;
  // Each server first takes a port the OS hands it, then restarts on that port: choosing ports ahead
  // raced the other test files' servers for them.
  let pgPort: number | undefined;
  let s3Port: number | undefined;
  let platform: TestPlatform;
  let key: string;
  let modelId: string;
  let imageUrl: string;

  const startPostgres = async () => {
    postgres = await startEmbeddedPostgres(path.join(data.dir, 'postgres'), log, pgPort);
    pgPort = Number(new URL(postgres.url).port);
  };
  const startS3 = async () => {
    s3 = await startEmbeddedS3(path.join(data.dir, 's3'), 'bigdiffusion', log, s3Port);
    s3Port = Number(new URL(s3.config.endpoint).port);
  };
  const health = async () => (await gql(platform.url, HEALTH)).data?.health;
  const until = async (condition: () => Promise<boolean>) => {
    while (!(await condition())) await sleep(200);
  };
  const jobStatus = async (id: string) => (await gql(platform.url, 'query($id: ID!) { job(id: $id) { status images { id url } } }', { id }, key)).data?.job;
  const finished = async (id: string) => {
    await until(async () => ['SUCCEEDED', 'FAILED', 'CANCELED'].includes((await jobStatus(id))?.status));
    return jobStatus(id);
  };

  beforeAll(async () => {
    data = await tempDir('bd-outage-');
    await startPostgres();
    await startS3();
    platform = await startTestPlatform({
      DATABASE_URL: postgres.url, S3_ENDPOINT: s3.config.endpoint, S3_ACCESS_KEY_ID: s3.config.accessKeyId, S3_SECRET_ACCESS_KEY: s3.config.secretAccessKey,
    });
    ({ key, modelId } = await userWithModel(platform, 'a@example.org', { kind: 'PRIVATE_META' }));
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
    await s3?.stop();
    await postgres?.stop();
    await data?.remove();
  });

  it('answers SERVICE_UNAVAILABLE while PostgreSQL is down, writes nothing, and carries on once it is back', async () => {
    const before = await finished((await gql(platform.url, GENERATE, { m: modelId, seed: 1 }, key)).data!.generateImages.id);
    expect(before.status).toBe('SUCCEEDED');
    imageUrl = new URL(before.images[0].url, platform.url).href;
    const jobsBefore = await platform.services.db.getRepository(Job).count();

    await postgres.stop();
    expect(await health()).toEqual({ ok: false, database: false, objectStore: true });
    const query = await gql(platform.url, '{ jobs { totalCount } }', {}, key);
    expect(errorCode(query)).toBe('SERVICE_UNAVAILABLE');
    const mutation = await gql(platform.url, GENERATE, { m: modelId, seed: 2 }, key);
    expect(errorCode(mutation)).toBe('SERVICE_UNAVAILABLE');
    expect(JSON.stringify(mutation.errors)).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|postgres/i);
    await sleep(1500); // the worker's queue polling and sweeps fail meanwhile

    await startPostgres();
    await until(async () => (await health())?.ok === true);
    expect(await platform.services.db.getRepository(Job).count()).toBe(jobsBefore);
    const after = (await gql(platform.url, GENERATE, { m: modelId, seed: 3 }, key)).data!.generateImages.id;
    expect((await finished(after)).status).toBe('SUCCEEDED');
  }, 120_000);

  it('a job running when PostgreSQL goes away finishes after it is back, and its subscriber sees it finish', async () => {
    const id = (await gql(platform.url, GENERATE.replace('steps: 20', 'steps: 200'), { m: modelId, seed: 4 }, key)).data!.generateImages.id;
    const client = createClient({ url: platform.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${key}` }, retryAttempts: 0 });
    const statuses: string[] = [];
    const streamed = new Promise<void>((resolve, reject) => {
      client.subscribe<{ jobUpdated: { status: string } }>(
        { query: 'subscription($id: ID!) { jobUpdated(jobId: $id) { status } }', variables: { id } },
        { next: ({ data }) => statuses.push(data!.jobUpdated.status), error: reject, complete: resolve },
      );
    });
    await until(async () => (await platform.services.db.getRepository(Job).findOneByOrFail({ id })).step >= 2);
    await postgres.stop();
    await sleep(3000);
    await startPostgres();
    const done = await finished(id);
    expect(done.status).toBe('SUCCEEDED');
    expect(done.images).toHaveLength(1);
    // The job-state listener reconnected and read the job again: the stream ends on its final state.
    await streamed.finally(() => client.dispose());
    expect(statuses.at(-1)).toBe('SUCCEEDED');
  }, 120_000);

  it('answers SERVICE_UNAVAILABLE while S3 is down, writes nothing; a job whose images cannot be stored waits and finishes once it is back', async () => {
    const id = (await gql(platform.url, GENERATE.replace('steps: 20', 'steps: 200'), { m: modelId, seed: 5 }, key)).data!.generateImages.id;
    const jobs = platform.services.db.getRepository(Job);
    await until(async () => (await jobs.findOneByOrFail({ id })).step >= 2);
    await s3.stop();
    expect(await health()).toEqual({ ok: false, database: true, objectStore: false });

    const photo = new Uint8Array(await sharp({ create: { width: 80, height: 80, channels: 3, background: '#ff0000' } }).png().toBuffer());
    const photosBefore = await platform.services.db.getRepository(InstanceImage).count();
    const upload = await gqlUpload(platform.url, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: photo, name: 'p.png', type: 'image/png' }, key);
    expect(errorCode(upload)).toBe('SERVICE_UNAVAILABLE');
    expect(await platform.services.db.getRepository(InstanceImage).count()).toBe(photosBefore);
    const download = await fetch(imageUrl, { headers: { authorization: `Bearer ${key}` } });
    expect([download.status, ((await download.json()) as { errors: { extensions: { code: string } }[] }).errors[0].extensions.code]).toEqual([503, 'SERVICE_UNAVAILABLE']);

    // Every step done, the PNG cannot be stored: the worker holds the job (neither failed nor finished) until S3 answers.
    await until(async () => {
      const { step, steps: total } = await jobs.findOneByOrFail({ id });
      return step === total; // the pipeline's count (PNDM takes one step more than asked)
    });
    await sleep(1500);
    expect(await jobs.findOneByOrFail({ id })).toMatchObject({ status: 'RUNNING', retries: 0 });

    await startS3();
    const done = await finished(id);
    expect(done.status).toBe('SUCCEEDED');
    expect((await jobs.findOneByOrFail({ id })).retries).toBe(0);
    const image = await fetch(new URL(done.images[0].url, platform.url), { headers: { authorization: `Bearer ${key}` } });
    expect(image.status).toBe(200);
    expect(await health()).toEqual({ ok: true, database: true, objectStore: true });
  }, 120_000);
});
