import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAdmin } from '../../src/services/users';
import { hasFixtures, TINY_SD15 } from '../helpers/fixtures';
import { gql, gqlUpload, signUp, startTestPlatform, type GraphQLResponse, type TestPlatform } from './helpers';

const START = 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { id } }';
const UPLOAD = 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }';
const JOB = 'query($id: ID!) { job(id: $id) { status error warnings params } }';

/** A synthetic photo, different per seed. */
async function photo(seed: number, size = 40): Promise<Uint8Array> {
  const background = { r: (seed * 70) % 256, g: 40 + seed * 10, b: 200 - seed * 30 };
  return new Uint8Array(await sharp({ create: { width: size, height: size, channels: 3, background } }).png().toBuffer());
}

describe.skipIf(!hasFixtures)('platform robustness on the tiny-sd15 fixture pack', () => {
  let platform: TestPlatform;
  let url: string;
  let user: { key: string; userId: string };
  let baseModelId: string;

  const ok = async (response: Promise<GraphQLResponse>) => {
    const r = await response;
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    return r.data!;
  };
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
    platform = await startTestPlatform();
    url = platform.url;
    const admin = (await createAdmin(platform.services.db, 'admin@example.org')).secret;
    user = await signUp(url, 'a@example.org');
    const pack = join(TINY_SD15, 'pack');
    for (const entry of await readdir(pack, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const file = join(entry.parentPath, entry.name);
      await platform.services.store.put(`base-models/tiny-sd15/${relative(pack, file)}`, await readFile(file));
    }
    baseModelId = (await ok(gql(url, 'mutation { registerBaseModel(input: { name: "tiny-sd15", storageLocation: "base-models/tiny-sd15" }) { id } }', {}, admin))).registerBaseModel.id;
  }, 120_000);
  afterAll(() => platform?.stop());

  it('shows the BIG split’s warnings on the fine-tune job', async () => {
    const modelId = (await ok(gql(url, 'mutation($b: ID!) { createModel(input: { name: "pets", kind: PRIVATE_META, baseModelId: $b }) { id } }', { b: baseModelId }, user.key))).createModel.id;
    const input = { target: 'PRIVATE_META', modelId, kind: 'OBJECT', steps: 2, learningRate: 1e-2, method: 'LORA', rank: 2 };
    const first = (await ok(gql(url, START, { input: { ...input, category: 'dog', instanceImageIds: [await stage(1)] } }, user.key))).startFineTune;
    expect(await finished(first.id)).toMatchObject({ status: 'SUCCEEDED', warnings: [] });

    // Cat's split has three parts (cat, dog, the dog concept's photos) but only two prior images.
    const second = (await ok(gql(url, START, { input: { ...input, category: 'cat', instanceImageIds: [await stage(2)] } }, user.key))).startFineTune;
    const done = await finished(second.id);
    expect(done.status).toBe('SUCCEEDED');
    expect(done.warnings).toHaveLength(1);
    expect(done.warnings[0]).toMatch(/2 prior images cannot cover all 3 parts/);
    const contribution = (await ok(gql(url, 'query($id: ID!) { contribution(id: $id) { priorSplit } }', { id: done.params.contributionId }, user.key))).contribution;
    expect(done.warnings).toEqual(contribution.priorSplit.warnings);
  }, 300_000);
});
