import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode, gql, gqlUpload, ok, signUp, startTestPlatform, type TestPlatform } from './helpers';
import { defaultBaseModelId } from './setup';

const START = `mutation($input: StartFineTuneInput!) { startFineTune(input: $input) {
  job { id type status steps fineTune { modelId conceptId contributionId method steps learningRate rank seed batchSize gradientAccumulation centerCrop flip } generation { prompt } }
  model { id name kind baseModelId }
  concept { id token category kind modelId }
  contribution { id status modelId conceptId }
} }`;

/** A fine-tune may leave steps and learning rate out: each method gets what works for it. No worker runs here. */
describe('fine-tune defaults per method', () => {
  let platform: TestPlatform;
  let key: string;
  let baseModelId: string;

  const photo = async () => {
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#a52' } }).png().toBuffer();
    return (await ok(gqlUpload(platform.url, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: png, name: 'p.png', type: 'image/png' }, key))).uploadInstanceImage.id;
  };
  const start = async (input: Record<string, unknown>) =>
    (await ok(gql(platform.url, START, {
      input: { target: 'PRIVATE', baseModelId, category: 'mug', kind: 'OBJECT', instanceImageIds: [await photo()], ...input },
    }, key))).startFineTune;

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    ({ key } = await signUp(platform.url, 'defaults@example.org'));
    baseModelId = await defaultBaseModelId(platform, key);
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('trains LoRA at 1e-4 for 500 steps and full fine-tunes at 5e-6 for 200 unless asked otherwise', async () => {
    const lora = (await start({ method: 'LORA' })).job;
    expect([lora.steps, lora.fineTune.steps, lora.fineTune.learningRate, lora.fineTune.rank]).toEqual([500, 500, 1e-4, 4]);
    const full = (await start({ method: 'FULL' })).job;
    expect([full.steps, full.fineTune.steps, full.fineTune.learningRate, full.fineTune.rank]).toEqual([200, 200, 5e-6, null]);
    const asked = (await start({ method: 'FULL', steps: 600, learningRate: 1e-6 })).job;
    expect([asked.fineTune.steps, asked.fineTune.learningRate]).toEqual([600, 1e-6]);
  });

  it('trains faces longer: 1000 LoRA and 800 full fine-tune steps unless asked otherwise', async () => {
    const lora = (await start({ method: 'LORA', kind: 'FACE', category: 'person' })).job;
    expect([lora.steps, lora.fineTune.learningRate]).toEqual([1000, 1e-4]);
    const full = (await start({ method: 'FULL', kind: 'FACE', category: 'person' })).job;
    expect([full.steps, full.fineTune.learningRate]).toEqual([800, 5e-6]);
    expect((await start({ method: 'FULL', kind: 'STYLE', category: 'painting' })).job.steps).toBe(200);
    expect((await start({ method: 'LORA', kind: 'FACE', category: 'person', steps: 1200 })).job.steps).toBe(1200);
  });

  it('draws 2 x 2 examples a step with random crops, as the original, unless asked otherwise; refuses bad batches', async () => {
    const plain = (await start({ method: 'LORA' })).job.fineTune;
    expect([plain.batchSize, plain.gradientAccumulation, plain.centerCrop, plain.flip]).toEqual([2, 2, false, false]);
    const asked = (await start({ method: 'LORA', batchSize: 1, gradientAccumulation: 4, centerCrop: true, flip: true })).job.fineTune;
    expect([asked.batchSize, asked.gradientAccumulation, asked.centerCrop, asked.flip]).toEqual([1, 4, true, true]);
    for (const [bad, field] of [[{ batchSize: 0 }, 'batchSize'], [{ batchSize: 9 }, 'batchSize'], [{ gradientAccumulation: 0 }, 'gradientAccumulation']] as const) {
      const response = await gql(platform.url, START, {
        input: { target: 'PRIVATE', baseModelId, category: 'mug', kind: 'OBJECT', instanceImageIds: [await photo()], method: 'LORA', ...bad },
      }, key);
      expect(errorCode(response), field).toBe('BAD_USER_INPUT');
      expect(response.errors![0].message).toContain(field);
    }
  });

  it('answers with the job, the new model, the concept with its identifier and the contribution, typed', async () => {
    const started = await start({ method: 'LORA', name: 'my mug', seed: 123 });
    const { job, model, concept, contribution } = started;
    expect(model).toEqual({ id: expect.any(String), name: 'my mug', kind: 'PRIVATE', baseModelId });
    expect(concept).toEqual({ id: expect.any(String), token: expect.stringMatching(/^[^aeiouy]{3}$/), category: 'mug', kind: 'OBJECT', modelId: model.id });
    expect(contribution).toEqual({ id: expect.any(String), status: 'PENDING', modelId: model.id, conceptId: concept.id });
    expect(job).toMatchObject({ type: 'FINETUNE', status: 'QUEUED', generation: null });
    expect(job.fineTune).toEqual({
      modelId: model.id, conceptId: concept.id, contributionId: contribution.id, method: 'LORA', steps: 500, learningRate: 1e-4, rank: 4, seed: 123,
      batchSize: 2, gradientAccumulation: 2, centerCrop: false, flip: false,
    });
    // The same typed settings when the job is read back; a generation has its own.
    const read = await ok(gql(platform.url, 'query($id: ID!) { job(id: $id) { fineTune { contributionId seed } } }', { id: job.id }, key));
    expect(read.job.fineTune).toEqual({ contributionId: contribution.id, seed: 123 });
    const generation = (await ok(gql(platform.url, `mutation($m: ID!) { generateImages(input: { modelId: $m, prompt: "a ${concept.token} mug", seed: 9 }) {
      fineTune { seed } generation { modelId versionId prompt negativePrompt steps guidanceScale scheduler seed width height numImages } } }`, { m: model.id }, key))).generateImages;
    expect(generation).toEqual({
      fineTune: null,
      generation: { modelId: model.id, versionId: null, prompt: `a ${concept.token} mug`, negativePrompt: '', steps: 30, guidanceScale: 7.5, scheduler: null, seed: 9, width: null, height: null, numImages: 1 },
    });
  });
});
