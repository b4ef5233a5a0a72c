import http from 'node:http';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode, followJob, gql, gqlUpload, ok, signUp, startTestPlatform, type TestPlatform } from './helpers';
import { defaultBaseModelId } from './setup';

const START = `mutation($input: StartFineTuneInput!) { startFineTune(input: $input) {
  job { id fineTune { preview { prompts every steps } } } concept { token } } }`;
const UPDATES = 'subscription($id: ID!) { jobUpdated(jobId: $id) { status step imageIds previewStep previewImageIds } }';
const PREVIEWS = `query($id: ID!) { job(id: $id) { status error images { id } previews { id previewStep prompt width height bytes url } } }`;

interface Update {
  status: string;
  step: number;
  imageIds: string[];
  previewStep: number | null;
  previewImageIds: string[];
}


const follow = (url: string, key: string, jobId: string) => followJob<Update>(url, key, UPDATES, jobId);

/**
 * A fine-tune's validation prompts, drawn every few steps with the weights being trained, on the bundled
 * base model: stored as the job's previews, told in its updates and to its webhook, never among its images.
 */
describe('training previews', () => {
  let platform: TestPlatform;
  let key: string;
  let baseModelId: string;
  const hooks: { type: string; data: any }[] = [];
  const receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      hooks.push(JSON.parse(Buffer.concat(chunks).toString()));
      res.writeHead(200).end();
    });
  });

  const photo = async (colour: string) => {
    const png = await sharp({ create: { width: 72, height: 64, channels: 3, background: colour } }).png().toBuffer();
    return (await ok(gqlUpload(platform.url, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: png, name: 'p.png', type: 'image/png' }, key)))
      .uploadInstanceImage.id as string;
  };
  const start = async (input: Record<string, unknown>) =>
    gql(platform.url, START, {
      input: { target: 'PRIVATE', baseModelId, category: 'toy', kind: 'OBJECT', method: 'LORA', instanceImageIds: [await photo('#c42')], ...input },
    }, key);
  const download = async (url: string) => {
    const response = await fetch(new URL(url, platform.url), { headers: { authorization: `Bearer ${key}` } });
    expect(response.status).toBe(200);
    return new Uint8Array(await response.arrayBuffer());
  };

  beforeAll(async () => {
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    platform = await startTestPlatform({ WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true', WEBHOOK_RETRY_BASE_SECONDS: '0.2' });
    ({ key } = await signUp(platform.url, 'previews@example.org'));
    baseModelId = await defaultBaseModelId(platform, key);
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
    receiver.closeAllConnections();
    await new Promise((resolve) => receiver.close(resolve));
  });

  it('draws each prompt every previewEvery steps with the weights of that step, and tells subscribers and webhooks', async () => {
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;
    const started = (await ok(start({
      steps: 4, learningRate: 1e-2, seed: 7, previewPrompts: ['a sks toy', 'a toy on a table'], previewEvery: 2, previewSteps: 2,
      token: 'sks', webhook: { url, events: ['PREVIEW', 'COMPLETED'] },
    }))).startFineTune;
    expect(started.job.fineTune.preview).toEqual({ prompts: ['a sks toy', 'a toy on a table'], every: 2, steps: 2 });
    const updates = await follow(platform.url, key, started.job.id);
    const job = (await ok(gql(platform.url, PREVIEWS, { id: started.job.id }, key))).job;
    expect(job.status, job.error).toBe('SUCCEEDED');

    // Two rounds (steps 2 and 4), each prompt once, in prompt order; none of them among the job's images or the images list.
    expect(job.previews.map((p: any) => [p.previewStep, p.prompt])).toEqual([[2, 'a sks toy'], [2, 'a toy on a table'], [4, 'a sks toy'], [4, 'a toy on a table']]);
    expect(job.images).toEqual([]);
    expect((await ok(gql(platform.url, '{ images { totalCount } }', {}, key))).images.totalCount).toBe(0);
    const pngs = await Promise.all(job.previews.map((p: any) => download(p.url)));
    for (const [i, png] of pngs.entries()) {
      expect(await sharp(png).metadata()).toMatchObject({ format: 'png', width: job.previews[i].width, height: job.previews[i].height });
      expect(png.length).toBe(job.previews[i].bytes);
    }
    // The same prompt and seed at step 2 and step 4: only the weights changed between them (learning rate 1e-2).
    expect(Buffer.compare(Buffer.from(pngs[0]), Buffer.from(pngs[2]))).not.toBe(0);

    // Subscribers saw each round as it was recorded, while the job ran, then the final state.
    const rounds = updates.filter((u) => u.previewStep !== null).map((u) => [u.status, u.previewStep, u.previewImageIds]);
    expect(rounds).toContainEqual(['RUNNING', 2, job.previews.slice(0, 2).map((p: any) => p.id)]);
    expect(updates.at(-1)).toMatchObject({ status: 'SUCCEEDED', previewStep: 4, previewImageIds: job.previews.slice(2).map((p: any) => p.id), imageIds: [] });

    // The webhook heard one job.preview per round, with the images' ids and download paths.
    await expect.poll(() => hooks.filter((h) => h.type === 'job.completed').length, { timeout: 30_000 }).toBe(1);
    const told = hooks.filter((h) => h.type === 'job.preview').sort((a, b) => a.data.step - b.data.step);
    expect(told.map((h) => h.data)).toEqual([2, 4].map((step) => ({
      jobId: started.job.id,
      step,
      images: job.previews.filter((p: any) => p.previewStep === step).map((p: any) => ({ imageId: p.id, prompt: p.prompt, url: p.url })),
    })));
  }, 180_000);

  it('previews a full fine-tune with the UNet of each round', async () => {
    const started = (await ok(start({ method: 'FULL', steps: 2, learningRate: 1e-2, seed: 3, previewPrompts: ['a toy'], previewEvery: 1, previewSteps: 2 }))).startFineTune;
    await follow(platform.url, key, started.job.id);
    const job = (await ok(gql(platform.url, PREVIEWS, { id: started.job.id }, key))).job;
    expect(job.status, job.error).toBe('SUCCEEDED');
    expect(job.previews.map((p: any) => p.previewStep)).toEqual([1, 2]);
    const [first, second] = await Promise.all(job.previews.map((p: any) => download(p.url)));
    expect(Buffer.compare(Buffer.from(first), Buffer.from(second))).not.toBe(0);
  }, 180_000);

  it('refuses preview settings it cannot honour, and queues nothing', async () => {
    const jobs = async () => (await ok(gql(platform.url, '{ jobs { totalCount } }', {}, key))).jobs.totalCount;
    const before = await jobs();
    const refused = [
      await start({ steps: 4, previewEvery: 2 }),
      await start({ steps: 4, previewPrompts: ['a', 'b', 'c', 'd', 'e'] }),
      await start({ steps: 100, previewPrompts: ['a', 'b'], previewEvery: 1 }),
      await start({ steps: 4, previewPrompts: ['a'], previewSteps: 51 }),
      await start({ steps: 4, previewPrompts: [' '] }),
    ];
    expect(refused.map(errorCode)).toEqual(Array(5).fill('BAD_USER_INPUT'));
    expect(refused[2].errors![0].message).toMatch(/200 previews, more than the 100 allowed/);
    expect(await jobs()).toBe(before);
  });
});
