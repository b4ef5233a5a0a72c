import { randomBytes } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InstanceImage } from '../../src/entities';
import { errorCode, gql, gqlUpload, ok, signUp, startTestPlatform, type TestPlatform } from './helpers';
import { createModel, defaultBaseModelId, newAdminKey } from './setup';

const QUOTA = 60_000;
const UPLOAD = 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id bytes } }';
const USAGE = '{ me { usage { storageBytes imagesMade } } }';


/** Each user keeps at most MAX_STORAGE_BYTES_PER_USER in storage: photos, images and model weights, counted as written. */
describe('storage quota', () => {
  let platform: TestPlatform;
  let admin: string;
  let baseModelId: string;

  const png = async (width: number, noisy = false) =>
    noisy
      ? sharp(randomBytes(width * width * 3), { raw: { width, height: width, channels: 3 } }).png().toBuffer()
      : sharp({ create: { width, height: width, channels: 3, background: '#8a4' } }).png().toBuffer();
  const upload = async (key: string, bytes: Buffer) => gqlUpload(platform.url, UPLOAD, {}, { bytes, name: 'p.png', type: 'image/png' }, key);
  const settled = async (key: string, jobId: string) => {
    for (;;) {
      const { job } = await ok(gql(platform.url, 'query($id: ID!) { job(id: $id) { status error images { bytes url } } }', { id: jobId }, key));
      if (!['QUEUED', 'RUNNING'].includes(job.status)) return job;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  };

  beforeAll(async () => {
    platform = await startTestPlatform({ MAX_STORAGE_BYTES_PER_USER: String(QUOTA) });
    admin = await newAdminKey(platform, 'root@example.org');
    baseModelId = await defaultBaseModelId(platform, admin);
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('counts photos and images as stored, and refuses an upload, a generation or a fine-tune that would pass the quota', async () => {
    const { key, userId } = await signUp(platform.url, 'keeper@example.org');
    const small = await png(64);
    const photo = (await ok(upload(key, small))).uploadInstanceImage;
    expect(photo.bytes).toBe(small.length);

    const big = await png(160, true); // ~77 kB of noise
    expect(big.length).toBeGreaterThan(QUOTA);
    const refused = await upload(key, big);
    expect(errorCode(refused)).toBe('QUOTA_EXCEEDED');
    expect(refused.errors![0].message).toMatch(new RegExp(`You keep ${small.length} bytes in storage; ${big.length} more would pass the ${QUOTA} allowed`));
    expect(await platform.services.db.getRepository(InstanceImage).countBy({ ownerId: userId })).toBe(1);
    expect(await platform.services.store.list(`instance-images/${userId}/`)).toHaveLength(1);

    const modelId = await createModel(platform, key);
    const generate = (numImages: number) => gql(platform.url, 'mutation($m: ID!, $n: Int) { generateImages(input: { modelId: $m, prompt: "x", steps: 1, numImages: $n }) { id } }', { m: modelId, n: numImages }, key);
    const job = await settled(key, (await ok(generate(1))).generateImages.id);
    expect(job.status, job.error).toBe('SUCCEEDED');
    const stored = (await fetch(new URL(job.images[0].url, platform.url), { headers: { authorization: `Bearer ${key}` } }).then((r) => r.arrayBuffer())).byteLength;
    expect(job.images[0].bytes).toBe(stored);
    const usage = (await ok(gql(platform.url, USAGE, {}, key))).me.usage;
    expect(usage).toEqual({ storageBytes: small.length + stored, imagesMade: 1 });

    // 8 images of 64 x 64 may take 8 x 64 x 64 x 3 bytes: past what is left.
    const jobs = async () => (await ok(gql(platform.url, '{ jobs { totalCount } }', {}, key))).jobs.totalCount;
    const before = await jobs();
    expect(errorCode(await generate(8))).toBe('QUOTA_EXCEEDED');
    expect(await jobs()).toBe(before);
    // So is a fine-tune whose previews may: 4 rounds of 4 prompts, 16 images of 64 x 64.
    const staged = (await ok(upload(key, small))).uploadInstanceImage.id;
    const fineTune = await gql(platform.url, 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } } }', {
      input: { target: 'PRIVATE', baseModelId, category: 'hat', kind: 'OBJECT', method: 'LORA', steps: 4, instanceImageIds: [staged], previewPrompts: ['a', 'b', 'c', 'd'], previewEvery: 1 },
    }, key);
    expect(errorCode(fineTune)).toBe('QUOTA_EXCEEDED');
    expect(fineTune.errors![0].message).toMatch(/bytes in storage; 196608 more would pass/);
    expect(await jobs()).toBe(before);
    expect((await ok(gql(platform.url, '{ instanceImages { nodes { id } } }', {}, key))).instanceImages.nodes.map((n: { id: string }) => n.id)).toContain(staged);
    await ok(gql(platform.url, 'mutation($id: ID!) { deleteInstanceImage(id: $id) }', { id: staged }, key));

    // Admins read everyone's storage; deleting frees it.
    const listed = (await ok(gql(platform.url, '{ users(first: 100) { nodes { id usage { storageBytes } } } }', {}, admin))).users.nodes;
    expect(listed.find((u: { id: string }) => u.id === userId).usage.storageBytes).toBe(small.length + stored);
    await ok(gql(platform.url, 'mutation($id: ID!) { deleteInstanceImage(id: $id) }', { id: photo.id }, key));
    expect((await ok(gql(platform.url, USAGE, {}, key))).me.usage.storageBytes).toBe(stored);
  }, 120_000);

  it('counts a fine-tune’s weights, as its version records them, against the model’s owner', async () => {
    const { key } = await signUp(platform.url, 'trainer@example.org');
    const photo = await png(64);
    const id = (await ok(upload(key, photo))).uploadInstanceImage.id;
    const started = (await ok(gql(platform.url, 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } model { id } } }', {
      input: { target: 'PRIVATE', baseModelId, category: 'hat', kind: 'OBJECT', method: 'LORA', steps: 1, instanceImageIds: [id] },
    }, key))).startFineTune;
    const job = await settled(key, started.job.id);
    expect(job.status, job.error).toBe('SUCCEEDED');
    const [version] = (await ok(gql(platform.url, 'query($id: ID!) { modelVersions(modelId: $id) { nodes { bytes } } }', { id: started.model.id }, key))).modelVersions.nodes;
    const [{ weightsKey }] = await platform.services.db.query('SELECT "weightsKey" FROM model_version WHERE "modelId" = $1', [started.model.id]);
    expect(version.bytes).toBe((await platform.services.store.get(weightsKey)).length);
    expect((await ok(gql(platform.url, USAGE, {}, key))).me.usage.storageBytes).toBe(photo.length + version.bytes);
  }, 120_000);
});
