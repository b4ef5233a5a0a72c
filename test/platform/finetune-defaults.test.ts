import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gql, gqlUpload, signUp, startTestPlatform, type GraphQLResponse, type TestPlatform } from './helpers';

/** A fine-tune may leave steps and learning rate out: each method gets what works for it. No worker runs here. */
describe('fine-tune defaults per method', () => {
  let platform: TestPlatform;
  let key: string;
  let baseModelId: string;

  const ok = async (response: Promise<GraphQLResponse>) => {
    const r = await response;
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    return r.data!;
  };
  const photo = async () => {
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#a52' } }).png().toBuffer();
    return (await ok(gqlUpload(platform.url, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: png, name: 'p.png', type: 'image/png' }, key))).uploadInstanceImage.id;
  };
  const start = async (input: Record<string, unknown>) =>
    (await ok(gql(platform.url, 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { steps params } }', {
      input: { target: 'PRIVATE', baseModelId, category: 'mug', kind: 'OBJECT', instanceImageIds: [await photo()], ...input },
    }, key))).startFineTune;

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    ({ key } = await signUp(platform.url, 'defaults@example.org'));
    baseModelId = (await ok(gql(platform.url, '{ baseModels { id } }', {}, key))).baseModels[0].id;
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('trains LoRA at 1e-4 for 500 steps and full fine-tunes at 5e-6 for 200 unless asked otherwise', async () => {
    const lora = await start({ method: 'LORA' });
    expect([lora.steps, lora.params.steps, lora.params.learningRate, lora.params.rank]).toEqual([500, 500, 1e-4, 4]);
    const full = await start({ method: 'FULL' });
    expect([full.steps, full.params.steps, full.params.learningRate, full.params.rank]).toEqual([200, 200, 5e-6, null]);
    const asked = await start({ method: 'FULL', steps: 600, learningRate: 1e-6 });
    expect([asked.params.steps, asked.params.learningRate]).toEqual([600, 1e-6]);
  });
});
