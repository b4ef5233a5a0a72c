import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ApiError, BigDiffusionClient, CancelJobDocument, CreateModelDocument, JobFailedError, type ApiErrorCode, type JobUpdate } from '@bigdiffusion/client';
import { startTestPlatform, type TestPlatform } from './helpers';

/** The runtime's WebSocket, counting the sockets the client opens. */
class CountingWebSocket extends WebSocket {
  static opened = 0;
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols);
    CountingWebSocket.opened++;
  }
}

/** A socket that never reaches the platform, as behind a proxy that drops WebSockets. */
class UnreachableWebSocket extends WebSocket {
  constructor(_url: string, protocols?: string | string[]) {
    super('ws://127.0.0.1:1/graphql', protocols);
  }
}

const photo = async (seed: number) =>
  new Uint8Array(await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 50 * seed, g: 120, b: 200 - 40 * seed } } }).png().toBuffer());

/** The code of the ApiError `promise` rejects with. */
async function codeOf(promise: Promise<unknown>): Promise<ApiErrorCode> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(ApiError);
  return (error as ApiError).code;
}

/** The client package against a real platform: HTTP, multipart, graphql-ws and image downloads. */
describe('@bigdiffusion/client', () => {
  let platform: TestPlatform;
  let secret: string;
  let live: BigDiffusionClient;
  let polling: BigDiffusionClient;

  beforeAll(async () => {
    platform = await startTestPlatform();
    ({ client: live, secret } = await BigDiffusionClient.signUp({ url: platform.url, webSocketImpl: CountingWebSocket }, 'client@example.org'));
    polling = new BigDiffusionClient({ url: platform.url, apiKey: secret, webSocketImpl: null, pollIntervalMs: 50 });
  });
  afterAll(async () => {
    await live?.close();
    await platform?.stop();
  });

  it('uploads photos, fine-tunes and generates, following jobs live and by polling, and downloads the PNGs', async () => {
    const base = await live.defaultBaseModel();
    expect(base).toMatchObject({ name: 'bundled-tiny-sd', isDefault: true, resolution: 64 });
    const uploaded = [await live.uploadPhoto(await photo(1)), await live.uploadPhoto(new Blob([await photo(2)]), { filename: 'two.png' })];
    expect(uploaded.map(({ width, height, conceptId }) => ({ width, height, conceptId }))).toEqual([
      { width: 64, height: 64, conceptId: null },
      { width: 64, height: 64, conceptId: null },
    ]);

    const { job, model, concept, contribution } = await live.startFineTune({
      target: 'PRIVATE', baseModelId: base.id, category: 'toy', kind: 'OBJECT', method: 'LORA', instanceImageIds: uploaded.map((u) => u.id), steps: 2, seed: 5,
    });
    expect(job.fineTune).toEqual({ modelId: model.id, conceptId: concept.id, contributionId: contribution.id, method: 'LORA', steps: 2, learningRate: 1e-4, rank: 4, seed: 5 });
    const trained: JobUpdate[] = [];
    const done = await live.followJob(job.id, { onUpdate: (update) => trained.push(update) });
    expect(done).toMatchObject({ jobId: job.id, status: 'SUCCEEDED', step: 2, steps: 2, error: null });
    expect(trained.at(-1)).toEqual(done);
    expect(CountingWebSocket.opened).toBe(1); // followed live
    expect(trained.filter((u) => u.loss !== null).map((u) => u.step)).toContain(1);

    const generation = await polling.generateImages({ modelId: model.id, prompt: `a ${concept.token} toy`, steps: 2, numImages: 2, seed: 3 });
    expect(generation.generation).toMatchObject({ modelId: model.id, prompt: `a ${concept.token} toy`, steps: 2, numImages: 2, seed: 3 });
    const polled: JobUpdate[] = [];
    const drawn = await polling.followJob(generation.id, { onUpdate: (update) => polled.push(update) });
    expect(drawn).toMatchObject({ status: 'SUCCEEDED', progress: 1, step: drawn.steps });
    expect(drawn.imageIds).toHaveLength(2);
    expect(new Set(polled.map((u) => JSON.stringify(u))).size).toBe(polled.length); // each state once
    // A finished job followed again ends at once, with the same state on either path.
    expect(await live.followJob(generation.id)).toEqual(drawn);

    const images = await live.downloadImages(generation.id);
    expect(images.map(({ image }) => image.id)).toEqual(drawn.imageIds);
    for (const { png } of images) expect(await sharp(png).metadata()).toMatchObject({ format: 'png', width: 64, height: 64 });
  });

  it('follows with the runtime’s own WebSocket where it has one (Node 22+, browsers), else by polling', async () => {
    const runtime = globalThis as { WebSocket?: new (...args: any[]) => object };
    const native = runtime.WebSocket;
    let opened = 0;
    if (native) {
      runtime.WebSocket = class extends native {
        constructor(...args: any[]) {
          super(...args);
          opened++;
        }
      };
    }
    try {
      const plain = new BigDiffusionClient({ url: platform.url, apiKey: secret });
      const { createModel } = await plain.request(CreateModelDocument, { input: { name: 'plain', kind: 'PRIVATE', baseModelId: (await plain.defaultBaseModel()).id } });
      const job = await plain.generateImages({ modelId: createModel.id, prompt: 'a toy', steps: 1 });
      expect(await plain.followJob(job.id)).toMatchObject({ jobId: job.id, status: 'SUCCEEDED' });
      await plain.close();
    } finally {
      runtime.WebSocket = native;
    }
    expect(opened).toBe(native ? 1 : 0);
  });

  it('polls when the WebSocket cannot connect', async () => {
    const behindProxy = new BigDiffusionClient({ url: platform.url, apiKey: secret, webSocketImpl: UnreachableWebSocket, pollIntervalMs: 50 });
    const { createModel } = await behindProxy.request(CreateModelDocument, {
      input: { name: 'proxied', kind: 'PRIVATE', baseModelId: (await behindProxy.defaultBaseModel()).id },
    });
    const job = await behindProxy.generateImages({ modelId: createModel.id, prompt: 'a toy', steps: 1 });
    expect(await behindProxy.followJob(job.id)).toMatchObject({ jobId: job.id, status: 'SUCCEEDED', imageIds: [expect.any(String)] });
    await behindProxy.close();
  });

  it('raises typed errors by extensions.code', async () => {
    expect(await codeOf(new BigDiffusionClient({ url: platform.url, apiKey: 'bd_unknown_key' }).defaultBaseModel())).toBe('UNAUTHENTICATED');
    expect(await codeOf(new BigDiffusionClient({ url: 'http://127.0.0.1:1/graphql' }).defaultBaseModel())).toBe('NETWORK_ERROR');
    expect(await codeOf(live.uploadPhoto(new TextEncoder().encode('not a photo')))).toBe('BAD_USER_INPUT');
    const baseModelId = (await live.defaultBaseModel()).id;
    expect(await codeOf(live.startFineTune({ target: 'PRIVATE', baseModelId, category: 'toy', kind: 'OBJECT', method: 'LORA', instanceImageIds: [] }))).toBe('BAD_USER_INPUT');
    expect(await codeOf(live.followJob(randomUUID()))).toBe('NOT_FOUND');
    expect(await codeOf(polling.followJob(randomUUID()))).toBe('NOT_FOUND');
    expect(await codeOf(live.downloadImage({ url: `/images/${randomUUID()}` }))).toBe('NOT_FOUND');

    // A job that ends other than SUCCEEDED rejects with its last state.
    const model = (await live.request(CreateModelDocument, { input: { name: 'canceled', kind: 'PRIVATE', baseModelId } })).createModel;
    const job = await live.generateImages({ modelId: model.id, prompt: 'a toy', steps: 200 });
    await expect(live.followJob(job.id, { signal: AbortSignal.timeout(100) })).rejects.toMatchObject({ name: 'TimeoutError' });
    await live.request(CancelJobDocument, { id: job.id });
    const failure = await live.followJob(job.id).then(() => undefined, (e: unknown) => e);
    expect(failure).toBeInstanceOf(JobFailedError);
    expect((failure as JobFailedError).update).toMatchObject({ jobId: job.id, status: 'CANCELED' });
  });
});
