// Faults: `npm run bench:faults` (FINETUNES=killed fine-tunes, default 5; STEPS per fine-tune, default 10;
// CHECKPOINT_STEPS, default 2; RESTARTS=PostgreSQL and S3 restarts each, default 3; SEED, default 1).
//
// 1. Fine-tunes with workers killed at random steps: contributions to one metamodel, each run by a worker
//    process (`ROLE=worker npm start`) that is SIGKILLed when its job reaches a random step; a fresh worker
//    process takes over. Counts the versions appended, the jobs lost, and the training steps spent twice
//    (the steps between the newest checkpoint and the kill).
// 2. PostgreSQL and S3 restarts under load: a platform (API and worker in this process) over an embedded
//    PostgreSQL and S3 that are stopped for DOWN_MS and started again on the same ports while clients
//    submit generations and read their jobs. Counts the submissions answered SERVICE_UNAVAILABLE or with
//    another error, the accepted jobs lost (not SUCCEEDED), and partial rows or objects: finished jobs
//    without their images, image rows without their object, objects under images/ no row names.
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import sharp from 'sharp';
import { loadConfig } from '../src/config';
import { Rng } from '../src/engine/random';
import { Contribution, Image, Job, ModelVersion } from '../src/entities';
import { startPlatform, type RunningPlatform } from '../src/main';
import { createAdmin } from '../src/services/users';
import { startEmbeddedPostgres, type RunningPostgres } from '../src/storage/embedded-postgres';
import { startEmbeddedS3, type RunningS3 } from '../src/storage/embedded-s3';
import { freePort } from '../src/storage/free-port';
import { checkpointPrefix } from '../src/worker/checkpoints';

const FINETUNES = Number(process.env.FINETUNES ?? 5);
const STEPS = Number(process.env.STEPS ?? 10);
const CHECKPOINT_STEPS = Number(process.env.CHECKPOINT_STEPS ?? 2);
const RESTARTS = Number(process.env.RESTARTS ?? 3);
const DOWN_MS = 2000;
const rng = new Rng(Number(process.env.SEED ?? 1));
const log = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const until = async (condition: () => Promise<boolean>, pollMs = 50) => {
  while (!(await condition())) await sleep(pollMs);
};

interface Gql {
  data?: Record<string, any> | null;
  errors?: { message: string; extensions?: { code?: string } }[];
}
async function gql(url: string, query: string, variables: Record<string, unknown>, key: string): Promise<Gql> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify({ query, variables }) });
  return (await response.json()) as Gql;
}
async function upload(url: string, bytes: Uint8Array, key: string): Promise<string> {
  const form = new FormData();
  form.set('operations', JSON.stringify({ query: 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', variables: { file: null } }));
  form.set('map', JSON.stringify({ 0: ['variables.file'] }));
  form.set('0', new Blob([bytes], { type: 'image/png' }), 'p.png');
  const response = await fetch(url, { method: 'POST', headers: { 'apollo-require-preflight': 'true', authorization: `Bearer ${key}` }, body: form });
  const body = (await response.json()) as Gql;
  if (!body.data) throw new Error(JSON.stringify(body.errors));
  return body.data.uploadInstanceImage.id;
}

const ENV = { BUNDLED_BASE_MODEL: 'tiny-random', JOB_HEARTBEAT_TIMEOUT_SECONDS: '2', FINETUNE_CHECKPOINT_STEPS: String(CHECKPOINT_STEPS), JOB_MAX_RETRIES: '3', MAX_ACTIVE_JOBS_PER_USER: '100000', MAX_JOBS_PER_MINUTE_PER_USER: '100000' };

async function start(dataDir: string, env: Record<string, string>): Promise<RunningPlatform> {
  return startPlatform(loadConfig({ ...ENV, DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', ...env }), log);
}

/** `ROLE=worker npm start` on the platform's database and S3. */
function workerProcess(platform: RunningPlatform, dataDir: string) {
  const { endpoint, bucket, accessKeyId, secretAccessKey } = platform.s3;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: {
      ...process.env, ...ENV, ROLE: 'worker', DATA_DIR: dataDir, DATABASE_URL: platform.databaseUrl, S3_ENDPOINT: endpoint, S3_BUCKET: bucket,
      S3_ACCESS_KEY_ID: accessKeyId, S3_SECRET_ACCESS_KEY: secretAccessKey, LOG_LEVEL: 'silent',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { kill: async () => (child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'), exited) };
}

async function killedFineTunes(): Promise<void> {
  const data = await fs.mkdtemp(path.join(os.tmpdir(), 'bd-faults-'));
  const platform = await start(data, { ROLE: 'api' });
  const url = platform.url!;
  const started = Date.now();
  let worker = workerProcess(platform, path.join(data, 'worker'));
  try {
    const key = (await createAdmin(platform.services.db, 'faults@example.org')).secret;
    const [base] = (await gql(url, '{ baseModels { id resolution } }', {}, key)).data!.baseModels;
    const modelId = (await gql(url, 'mutation($b: ID!) { createModel(input: { name: "faults", kind: PRIVATE_META, baseModelId: $b }) { id } }', { b: base.id }, key)).data!.createModel.id;
    const jobs = platform.services.db.getRepository(Job);
    let extraSteps = 0;
    const killSteps: number[] = [];
    for (let i = 0; i < FINETUNES; i++) {
      const photo = new Uint8Array(await sharp({ create: { width: base.resolution, height: base.resolution, channels: 3, background: { r: (i * 53) % 256, g: 90, b: 200 } } }).png().toBuffer());
      const input = { target: 'PRIVATE_META', modelId, category: 'dog', kind: 'OBJECT', instanceImageIds: [await upload(url, photo, key)], method: 'LORA', rank: 2, steps: STEPS, learningRate: 1e-3, seed: i };
      const started = await gql(url, 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } } }', { input }, key);
      const jobId = started.data!.startFineTune.job.id;
      const killAt = 1 + Math.floor(rng.nextUniform() * (STEPS - 1));
      await until(async () => (await jobs.findOneByOrFail({ id: jobId })).step >= killAt);
      await worker.kill();
      const killed = await jobs.findOneByOrFail({ id: jobId });
      if (killed.status !== 'RUNNING') throw new Error(`fine-tune ${i} ended (${killed.status}) before its worker was killed: raise STEPS`);
      // Steps the dead worker took past its newest checkpoint, as its progress recorded them: the next worker takes them again.
      const saved = await platform.services.store.list(checkpointPrefix(jobId));
      const newest = saved.length ? Number(saved[saved.length - 1].match(/(\d+)\.safetensors$/)![1]) : 0;
      killSteps.push(killed.step);
      extraSteps += killed.step - newest;
      worker = workerProcess(platform, path.join(data, 'worker'));
      await until(async () => !['QUEUED', 'RUNNING'].includes((await jobs.findOneByOrFail({ id: jobId })).status), 200);
    }
    const all = await jobs.find({ where: { type: 'FINETUNE' as Job['type'] } });
    const versions = await platform.services.db.getRepository(ModelVersion).countBy({ modelId });
    const merged = await platform.services.db.getRepository(Contribution).countBy({ modelId, status: 'MERGED' as Contribution['status'] });
    // A job's checkpoints go just after its version is recorded: give the last job's a moment.
    const waitUntil = Date.now() + 10_000;
    await until(async () => (await platform.services.store.list('checkpoints/')).length === 0 || Date.now() > waitUntil, 200);
    const leftCheckpoints = (await platform.services.store.list('checkpoints/')).length;
    console.log(`\n## Fine-tunes with workers killed at random steps (${FINETUNES} fine-tunes x ${STEPS} steps, checkpoint every ${CHECKPOINT_STEPS})`);
    console.log('| fine-tunes | killed at steps | versions appended | jobs lost | retries | extra training steps | checkpoints left | wall time |');
    console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
    console.log(`| ${FINETUNES} | ${killSteps.join(', ')} | ${versions} (contributions merged: ${merged}) | ${all.filter((j) => j.status !== 'SUCCEEDED').length} | ${all.reduce((n, j) => n + j.retries, 0)} | ${extraSteps} of ${FINETUNES * STEPS} | ${leftCheckpoints} | ${((Date.now() - started) / 1000).toFixed(0)} s |`);
  } finally {
    await worker.kill();
    await platform.stop();
    await fs.rm(data, { recursive: true, force: true });
  }
}

async function restartsUnderLoad(): Promise<void> {
  const data = await fs.mkdtemp(path.join(os.tmpdir(), 'bd-faults-'));
  const [pgPort, s3Port] = [await freePort(), await freePort()];
  let postgres: RunningPostgres = await startEmbeddedPostgres(path.join(data, 'postgres'), log, pgPort);
  let s3: RunningS3 = await startEmbeddedS3(path.join(data, 's3'), 'bigdiffusion', log, s3Port);
  const platform = await start(path.join(data, 'platform'), {
    DATABASE_URL: postgres.url, S3_ENDPOINT: s3.config.endpoint, S3_ACCESS_KEY_ID: s3.config.accessKeyId, S3_SECRET_ACCESS_KEY: s3.config.secretAccessKey,
  });
  const url = platform.url!;
  const started = Date.now();
  try {
    const key = (await createAdmin(platform.services.db, 'faults@example.org')).secret;
    const [base] = (await gql(url, '{ baseModels { id } }', {}, key)).data!.baseModels;
    const modelId = (await gql(url, 'mutation($b: ID!) { createModel(input: { name: "load", kind: PRIVATE_META, baseModelId: $b }) { id } }', { b: base.id }, key)).data!.createModel.id;

    // Clients: submit a small generation and read the job list, twice a second, until the restarts are over.
    const accepted: string[] = [];
    const answers = new Map<string, number>();
    const count = (what: string) => answers.set(what, (answers.get(what) ?? 0) + 1);
    let loading = true;
    const load = (async () => {
      for (let seed = 0; loading; seed++) {
        const submitted = await gql(url, 'mutation($m: ID!, $s: Float) { generateImages(input: { modelId: $m, prompt: "a dog", steps: 4, seed: $s }) { id } }', { m: modelId, s: seed }, key)
          .catch((error: Error) => ({ errors: [{ message: error.message, extensions: { code: 'NO_ANSWER' } }] }) as Gql);
        if (submitted.data?.generateImages) accepted.push(submitted.data.generateImages.id);
        count(`submit ${submitted.errors?.[0]?.extensions?.code ?? 'OK'}`);
        const read = await gql(url, '{ jobs(first: 5) { totalCount } }', {}, key).catch(() => ({ errors: [{ message: '', extensions: { code: 'NO_ANSWER' } }] }) as Gql);
        count(`read ${read.errors?.[0]?.extensions?.code ?? 'OK'}`);
        await sleep(500);
      }
    })();
    for (let i = 0; i < RESTARTS; i++) {
      await sleep(3000);
      await postgres.stop();
      await sleep(DOWN_MS);
      postgres = await startEmbeddedPostgres(path.join(data, 'postgres'), log, pgPort);
      await sleep(3000);
      await s3.stop();
      await sleep(DOWN_MS);
      s3 = await startEmbeddedS3(path.join(data, 's3'), 'bigdiffusion', log, s3Port);
    }
    await sleep(3000);
    loading = false;
    await load;

    const jobs = platform.services.db.getRepository(Job);
    const deadline = Date.now() + 5 * 60_000;
    const settled = async () => (await jobs.countBy({ status: 'QUEUED' as Job['status'] })) + (await jobs.countBy({ status: 'RUNNING' as Job['status'] })) === 0;
    await until(async () => (await settled()) || Date.now() > deadline, 500);
    const rows = await jobs.find();
    const images = await platform.services.db.getRepository(Image).find();
    const objects = new Set(await platform.services.store.list('images/'));
    const lost = accepted.filter((id) => rows.find((j) => j.id === id)?.status !== 'SUCCEEDED').length;
    const withoutImages = rows.filter((j) => j.status === 'SUCCEEDED' && !images.some((image) => image.jobId === j.id)).length;
    const rowsWithoutObject = images.filter((image) => !objects.has(image.objectKey)).length;
    const named = new Set(images.map((image) => image.objectKey));
    const orphans = [...objects].filter((k) => !named.has(k)).length;
    console.log(`\n## PostgreSQL and S3 restarts under load (${RESTARTS} of each, ${DOWN_MS / 1000} s down, clients submitting and reading twice a second)`);
    console.log('| jobs accepted | answers (kind code: count) | jobs lost | retries | succeeded jobs without images | image rows without object | objects no row names | wall time |');
    console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
    const kinds = [...answers].sort().map(([what, n]) => `${what}: ${n}`).join(', ');
    console.log(`| ${accepted.length} | ${kinds} | ${lost} | ${rows.reduce((n, j) => n + j.retries, 0)} | ${withoutImages} | ${rowsWithoutObject} | ${orphans} | ${((Date.now() - started) / 1000).toFixed(0)} s |`);
  } finally {
    await platform.stop();
    await s3.stop();
    await postgres.stop();
    await fs.rm(data, { recursive: true, force: true });
  }
}

await killedFineTunes();
await restartsUnderLoad();
process.exit(0);
