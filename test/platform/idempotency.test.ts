import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InstanceImage, Job, Model } from '../../src/entities';
import { errorCode, gql, gqlUpload, ok, signUp, startTestPlatform, type TestPlatform } from './helpers';
import { defaultBaseModelId } from './setup';

/** Retried mutations with an idempotency key make one object. No worker runs, so jobs stay QUEUED. */
describe('idempotency keys', () => {
  let platform: TestPlatform;
  let url: string;
  let key: string;
  let baseModelId: string;
  let modelId: string;

  const count = (entity: typeof Job | typeof Model | typeof InstanceImage) => platform.services.db.getRepository(entity).count();
  const createModel = (name: string, idempotencyKey?: string, who = key) =>
    gql(url, 'mutation($input: CreateModelInput!) { createModel(input: $input) { id name } }', { input: { name, kind: 'PRIVATE', baseModelId, idempotencyKey } }, who);
  const generate = (input: Record<string, unknown>) =>
    gql(url, 'mutation($input: GenerateImagesInput!) { generateImages(input: $input) { id } }', { input: { modelId, steps: 1, ...input } }, key);
  const png = (color: string) => sharp({ create: { width: 64, height: 64, channels: 3, background: color } }).png().toBuffer();
  const upload = async (bytes: Buffer, idempotencyKey?: string) =>
    gqlUpload(url, 'mutation($file: Upload!, $k: String) { uploadInstanceImage(file: $file, idempotencyKey: $k) { id } }', { k: idempotencyKey }, { bytes, name: 'p.png', type: 'image/png' }, key);

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    url = platform.url;
    ({ key } = await signUp(url, 'retry@example.org'));
    baseModelId = await defaultBaseModelId(platform, key);
    modelId = (await ok(createModel('target'))).createModel.id;
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('createModel: a retry returns the same model; the key with other arguments is a CONFLICT; keys are per user', async () => {
    const before = await count(Model);
    const first = (await ok(createModel('kept', 'model-1'))).createModel;
    expect((await ok(createModel('kept', 'model-1'))).createModel).toEqual(first);
    const changed = await createModel('other', 'model-1');
    expect(errorCode(changed)).toBe('CONFLICT');
    expect(changed.errors![0].message).toMatch(/different request/);
    expect(await count(Model)).toBe(before + 1);
    // Another user's same key is theirs alone.
    const other = await signUp(url, 'other-retry@example.org');
    expect((await ok(createModel('kept', 'model-1', other.key))).createModel.id).not.toBe(first.id);
  });

  it('generateImages: concurrent retries make one job, and each gets it or a CONFLICT while the first runs', async () => {
    const before = await count(Job);
    const answers = await Promise.all(Array.from({ length: 5 }, () => generate({ prompt: 'a dog', seed: 1, idempotencyKey: 'gen-1' })));
    const made = answers.filter((a) => !a.errors).map((a) => a.data!.generateImages.id);
    expect(made.length).toBeGreaterThanOrEqual(1);
    expect(new Set(made).size).toBe(1);
    for (const refused of answers.filter((a) => a.errors)) expect(errorCode(refused)).toBe('CONFLICT');
    expect((await ok(generate({ prompt: 'a dog', seed: 1, idempotencyKey: 'gen-1' }))).generateImages.id).toBe(made[0]);
    expect(errorCode(await generate({ prompt: 'a cat', seed: 1, idempotencyKey: 'gen-1' }))).toBe('CONFLICT');
    expect(await count(Job)).toBe(before + 1);
  });

  it('a refused request gives its key up, and an expired key makes a new object', async () => {
    const before = await count(Job);
    expect(errorCode(await generate({ prompt: '', idempotencyKey: 'gen-2' }))).toBe('BAD_USER_INPUT');
    const job = (await ok(generate({ prompt: 'a dog', idempotencyKey: 'gen-2' }))).generateImages;
    await platform.services.db.query(`UPDATE idempotency_key SET "expiresAt" = now() WHERE key = 'gen-2'`);
    const later = (await ok(generate({ prompt: 'a dog', idempotencyKey: 'gen-2' }))).generateImages;
    expect(later.id).not.toBe(job.id);
    expect(await count(Job)).toBe(before + 2);
    expect(errorCode(await generate({ prompt: 'a dog', idempotencyKey: 'k'.repeat(256) }))).toBe('BAD_USER_INPUT');
    expect(errorCode(await generate({ prompt: 'a dog', idempotencyKey: '' }))).toBe('BAD_USER_INPUT');
  });

  it('uploadInstanceImage: the same photo under the same key is stored once; another photo is a CONFLICT', async () => {
    const before = await count(InstanceImage);
    const red = await png('#f00');
    const first = (await ok(upload(red, 'photo-1'))).uploadInstanceImage.id;
    expect((await ok(upload(red, 'photo-1'))).uploadInstanceImage.id).toBe(first);
    expect(errorCode(await upload(await png('#00f'), 'photo-1'))).toBe('CONFLICT');
    expect(await count(InstanceImage)).toBe(before + 1);
  });

  it('startFineTune: a retry returns the same job though its photos are taken; other settings are a CONFLICT', async () => {
    const photo = (await ok(upload(await png('#0f0')))).uploadInstanceImage.id;
    const start = (steps: number) =>
      gql(url, 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } model { id } concept { token } contribution { id } } }', {
        input: { target: 'PRIVATE', baseModelId, category: 'mug', kind: 'OBJECT', instanceImageIds: [photo], method: 'LORA', steps, idempotencyKey: 'tune-1' },
      }, key);
    const jobs = await count(Job);
    const models = await count(Model);
    // The whole payload again: the same job, model, concept and contribution.
    const first = (await ok(start(10))).startFineTune;
    expect((await ok(start(10))).startFineTune).toEqual(first);
    expect(errorCode(await start(20))).toBe('CONFLICT');
    expect([await count(Job), await count(Model)]).toEqual([jobs + 1, models + 1]);
  });
});
