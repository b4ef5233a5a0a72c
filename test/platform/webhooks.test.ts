import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config';
import { Job } from '../../src/entities';
import { startPlatform, type RunningPlatform } from '../../src/main';
import { isPublicAddress, publicOnlyLookup } from '../../src/services/webhook-urls';
import { hasFixtures } from '../helpers/fixtures';
import { errorCode, gql, ok, sharedServices, signUp, startTestPlatform, tempDir } from './helpers';
import { adminWithFixturePack, userWithModel, type UserWithModel } from './setup';

/** One POST the receiver got, and what it answered. */
interface Received {
  id: string;
  headers: Record<string, string>;
  body: string;
  answered: number;
}

/** A webhook receiver on 127.0.0.1 that records every request and answers what `answer` says. */
class Receiver {
  readonly received: Received[] = [];
  answer: (id: string, attempt: number) => number = () => 200;
  #waiters: (() => void)[] = [];
  readonly #server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const id = String(req.headers['webhook-id']);
      const attempt = this.received.filter((r) => r.id === id).length + 1;
      const answered = this.answer(id, attempt);
      this.received.push({ id, headers: req.headers as Record<string, string>, body: Buffer.concat(chunks).toString(), answered });
      res.writeHead(answered).end();
      this.#waiters.splice(0).forEach((wake) => wake());
    });
  });
  url = '';

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/hooks`;
  }

  stop(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  /** Waits until `done` holds of what was received. */
  async until(done: (received: Received[]) => boolean, timeoutMs = 60_000): Promise<Received[]> {
    const deadline = Date.now() + timeoutMs;
    while (!done(this.received)) {
      if (Date.now() > deadline) throw new Error(`receiver timed out with ${JSON.stringify(this.received.map((r) => [r.id, r.answered, JSON.parse(r.body).type]))}`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 500);
      });
    }
    return this.received;
  }

  /** The events acknowledged (2xx) for a job, once each, in the order they arrived. */
  acknowledged(jobId: string): { id: string; type: string; data: any }[] {
    const seen = new Set<string>();
    return this.received
      .filter((r) => r.answered === 200 && !seen.has(r.id) && seen.add(r.id))
      .map((r) => ({ id: r.id, ...JSON.parse(r.body) }))
      .filter((event) => event.data.jobId === jobId);
  }
}

const GENERATE = 'mutation($input: GenerateImagesInput!) { generateImages(input: $input) { id } }';
const DELIVERIES = `query($jobId: ID, $status: WebhookDeliveryStatus) {
  webhookDeliveries(jobId: $jobId, status: $status, first: 100) { totalCount nodes { id type status attempts responseStatus lastError url payload } }
}`;

describe.skipIf(!hasFixtures)('webhooks', () => {
  const receiver = new Receiver();
  let data: Awaited<ReturnType<typeof tempDir>>;
  let platform: RunningPlatform;
  let url: string;
  let user: UserWithModel;
  let secret: string;

  /** The platform on `data.dir`: stopping and starting it again keeps its database and bucket. */
  const start = async () => {
    const config = loadConfig({
      DATA_DIR: data.dir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', BUNDLED_BASE_MODEL: 'tiny-random',
      WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'true', WEBHOOK_RETRY_BASE_SECONDS: '0.5',
    });
    platform = await startPlatform(config, pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }));
    url = platform.url!;
  };
  const generate = (webhook: Record<string, unknown> | null, extra: Record<string, unknown> = {}) =>
    ok(gql(url, GENERATE, { input: { modelId: user.modelId, prompt: 'a dog', steps: 3, width: 64, height: 64, ...extra, ...(webhook ? { webhook } : {}) } }, user.key)).then(
      (d) => d.generateImages.id as string,
    );
  const deliveries = (jobId: string, key = user.key) => ok(gql(url, DELIVERIES, { jobId }, key)).then((d) => d.webhookDeliveries);
  /** Verifies with the Standard Webhooks reference library: throws on a bad signature or a stale timestamp. */
  const verify = (r: Received) => new Webhook(secret).verify(r.body, r.headers);

  beforeAll(async () => {
    await receiver.start();
    data = await tempDir('bd-webhooks-');
    await start();
    const { baseModelId } = await adminWithFixturePack(platform);
    user = await userWithModel(platform, 'hooks@example.org', { baseModelId });
    secret = (await ok(gql(url, '{ webhookSettings { secret } }', {}, user.key))).webhookSettings.secret;
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
    await receiver.stop();
    await data?.remove();
  });

  it('tells a generation’s start, progress, images and completion, signed with the user’s secret', async () => {
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    const jobId = await generate({ url: receiver.url, progressEverySteps: 1 }, { numImages: 2 });
    // Attempts go out concurrently, so the completion may arrive before others: wait for the log to settle.
    await receiver.until(() => receiver.acknowledged(jobId).some((e) => e.type === 'job.completed'));
    await expect.poll(async () => (await deliveries(jobId)).nodes.every((d: { status: string }) => d.status === 'DELIVERED'), { timeout: 30_000 }).toBe(true);
    for (const r of receiver.received) expect(verify(r)).toEqual(JSON.parse(r.body));
    expect(() => new Webhook(`whsec_${Buffer.alloc(32, 7).toString('base64')}`).verify(receiver.received[0].body, receiver.received[0].headers)).toThrow();

    const events = receiver.acknowledged(jobId);
    const types = events.map((e) => e.type);
    expect(types.filter((t) => t === 'job.started')).toHaveLength(1);
    const images = (await ok(gql(url, 'query($id: ID!) { job(id: $id) { status steps images { id url } } }', { id: jobId }, user.key))).job;
    // Every step once (the sampler's count), whatever order the concurrent attempts arrived in.
    const steps = Array.from({ length: images.steps }, (_, i) => i + 1);
    expect(events.filter((e) => e.type === 'job.progress').map((e) => e.data.step).sort((x, y) => x - y)).toEqual(steps);
    expect(images.status).toBe('SUCCEEDED');
    const imageEvents = events.filter((e) => e.type === 'job.image').sort((x, y) => x.data.index - y.data.index);
    expect(imageEvents.map((e) => e.data)).toEqual(images.images.map((image: { id: string; url: string }, index: number) => ({ jobId, imageId: image.id, index, url: image.url })));
    const completed = events.find((e) => e.type === 'job.completed')!;
    expect(completed.data).toMatchObject({ jobId, status: 'SUCCEEDED', step: images.steps, steps: images.steps, imageIds: images.images.map((i: { id: string }) => i.id) });

    const log = await deliveries(jobId);
    expect(log.totalCount).toBe(events.length);
    expect(new Set(log.nodes.map((d: { id: string }) => d.id))).toEqual(new Set(events.map((e) => e.id)));
    for (const d of log.nodes) expect(d).toMatchObject({ status: 'DELIVERED', attempts: 1, responseStatus: 200, lastError: null, url: receiver.url });
    // Only the owner reads the log.
    const other = await signUp(url, 'other@example.org');
    expect(errorCode(await gql(url, DELIVERIES, { jobId }, other.key))).toBe('NOT_FOUND');
    expect((await ok(gql(url, '{ webhookDeliveries { totalCount } }', {}, other.key))).webhookDeliveries.totalCount).toBe(0);
  }, 120_000);

  it('sends only the events asked for, PROGRESS no more often than its interval', async () => {
    const jobId = await generate({ url: receiver.url, events: ['PROGRESS', 'COMPLETED'], progressEverySeconds: 3600 });
    await receiver.until(() => receiver.acknowledged(jobId).some((e) => e.type === 'job.completed'));
    // The interval counts from the start, so an hour-long interval sends no progress for a 3-step job.
    expect(receiver.acknowledged(jobId).map((e) => e.type)).toEqual(['job.completed']);
  }, 120_000);

  it('retries a delivery the receiver failed, with the same id and body, until it is accepted', async () => {
    receiver.answer = (_id, attempt) => (attempt < 3 ? 500 : 200);
    try {
      const jobId = await generate({ url: receiver.url, events: ['COMPLETED'] });
      await receiver.until(() => receiver.acknowledged(jobId).length === 1);
      const attempts = receiver.received.filter((r) => JSON.parse(r.body).data.jobId === jobId);
      expect(attempts.map((r) => r.answered)).toEqual([500, 500, 200]);
      expect(new Set(attempts.map((r) => r.id)).size).toBe(1);
      expect(new Set(attempts.map((r) => r.body)).size).toBe(1);
      for (const r of attempts) verify(r);
      // Backoff: the second wait is 4 times the first (0.5 s, then 2 s).
      const at = attempts.map((r) => Number(r.headers['webhook-timestamp']));
      expect(at[2] - at[1]).toBeGreaterThanOrEqual(1);
      // The log is written once the receiver has answered.
      await expect
        .poll(async () => (await deliveries(jobId)).nodes[0], { timeout: 30_000 })
        .toMatchObject({ status: 'DELIVERED', attempts: 3, responseStatus: 200, lastError: null });
    } finally {
      receiver.answer = () => 200;
    }
  }, 120_000);

  it('gives up after WEBHOOK_MAX_ATTEMPTS and sends again on redeliverWebhook', async () => {
    receiver.answer = () => 500;
    const jobId = await generate({ url: receiver.url, events: ['COMPLETED'] });
    // 8 attempts at 0.5 s x 4^n would take hours: end the round by making the last attempt due now.
    await receiver.until((all) => all.some((r) => JSON.parse(r.body).data.jobId === jobId));
    const [pending] = (await deliveries(jobId)).nodes;
    await platform.services.db.query(`UPDATE webhook_delivery SET attempts = 7, "nextAttemptAt" = now() WHERE id = $1 AND status = 'PENDING'`, [pending.id]);
    const failed = async () => (await deliveries(jobId)).nodes[0];
    await expect.poll(failed, { timeout: 30_000 }).toMatchObject({ status: 'FAILED', attempts: 8, responseStatus: 500, lastError: 'HTTP 500' });
    receiver.answer = () => 200;
    const again = await ok(gql(url, 'mutation($id: ID!) { redeliverWebhook(id: $id) { id status attempts } }', { id: pending.id }, user.key));
    expect(again.redeliverWebhook).toMatchObject({ id: pending.id, status: 'PENDING', attempts: 0 });
    await receiver.until(() => receiver.acknowledged(jobId).length === 1);
    await expect.poll(failed, { timeout: 30_000 }).toMatchObject({ status: 'DELIVERED', attempts: 1 });
  }, 120_000);

  it('uses the user’s default webhook for jobs submitted without one, and tells a canceled job’s end', async () => {
    await ok(gql(url, 'mutation($url: String!) { setWebhookDefault(input: { url: $url, events: [COMPLETED] }) { defaultTarget { url events } } }', { url: receiver.url }, user.key));
    try {
      const jobId = await generate(null, { steps: 200, width: 256, height: 256 });
      await ok(gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { id } }', { id: jobId }, user.key));
      await receiver.until(() => receiver.acknowledged(jobId).length === 1);
      expect(receiver.acknowledged(jobId)[0]).toMatchObject({ type: 'job.completed', data: { status: 'CANCELED', imageIds: [] } });
    } finally {
      await ok(gql(url, 'mutation { setWebhookDefault(input: null) { defaultTarget { url } } }', {}, user.key));
    }
  }, 120_000);

  it('refuses URLs on loopback, private and reserved addresses unless configured, creating nothing', async () => {
    const guarded = await startTestPlatform({ ...sharedServices(platform), ROLE: 'api' });
    try {
      const jobs = () => platform.services.db.getRepository(Job).count();
      const before = await jobs();
      for (const bad of [
        receiver.url, 'http://localhost:9/', 'http://10.1.2.3/', 'http://192.168.0.1/', 'http://169.254.169.254/latest/meta-data',
        'http://[::1]/', 'http://[::ffff:127.0.0.1]/', 'http://100.64.0.1/', 'http://0.0.0.0/', 'ftp://example.com/', 'http://u:p@example.com/', 'not a url',
      ]) {
        const refused = await gql(guarded.url, GENERATE, { input: { modelId: user.modelId, prompt: 'a dog', webhook: { url: bad } } }, user.key);
        expect(errorCode(refused), bad).toBe('BAD_USER_INPUT');
        expect(refused.errors![0].message).toMatch(/^webhook\.url: /);
        const asDefault = await gql(guarded.url, 'mutation($url: String!) { setWebhookDefault(input: { url: $url }) { secret } }', { url: bad }, user.key);
        expect(errorCode(asDefault), bad).toBe('BAD_USER_INPUT');
      }
      expect(await jobs()).toBe(before);
      expect((await ok(gql(url, '{ webhookSettings { defaultTarget { url } } }', {}, user.key))).webhookSettings.defaultTarget).toBeNull();
    } finally {
      await guarded.stop();
    }
  }, 120_000);

  it('refuses at connect time a name that resolves to loopback, so a URL cannot rebind past the check', async () => {
    const before = receiver.received.length;
    const port = new URL(receiver.url).port;
    const post = (host: string, lookup?: typeof publicOnlyLookup) =>
      new Promise<number>((resolve, reject) => {
        const request = http.request(`http://${host}:${port}/hooks`, { method: 'POST', lookup }, (response) => {
          response.resume();
          resolve(response.statusCode!);
        });
        request.on('error', reject);
        request.end('{}');
      });
    await expect(post('localhost', publicOnlyLookup)).rejects.toThrow(/non-public address/);
    expect(receiver.received.length).toBe(before);
    expect(await post('localhost')).toBe(200); // the receiver is there: only the lookup refused it
    receiver.received.splice(before); // that was no webhook delivery
    expect(['8.8.8.8', '2606:4700::1111'].map(isPublicAddress)).toEqual([true, true]);
    expect(['127.0.0.1', '10.0.0.1', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '::1', 'fd00::1', 'fe80::1', '::ffff:10.0.0.1', '0.0.0.0', '224.0.0.1'].map(isPublicAddress)).toEqual(Array(12).fill(false));
  });

  it('loses no event across a platform restart', async () => {
    receiver.answer = () => 503;
    const jobId = await generate({ url: receiver.url, progressEverySteps: 1 });
    await expect
      .poll(async () => (await ok(gql(url, 'query($id: ID!) { job(id: $id) { status } }', { id: jobId }, user.key))).job.status, { timeout: 60_000 })
      .toBe('SUCCEEDED');
    const { steps } = (await ok(gql(url, 'query($id: ID!) { job(id: $id) { steps } }', { id: jobId }, user.key))).job;
    const before = (await deliveries(jobId)).nodes as { id: string; type: string; status: string }[];
    const progress = Array<string>(steps).fill('job.progress');
    expect(before.map((d) => d.type).sort()).toEqual(['job.completed', 'job.image', ...progress, 'job.started']);
    expect(before.every((d) => d.status === 'PENDING')).toBe(true);

    await platform.stop();
    receiver.answer = () => 200;
    await start();
    await receiver.until(() => receiver.acknowledged(jobId).length === before.length);
    expect(new Set(receiver.acknowledged(jobId).map((e) => e.id))).toEqual(new Set(before.map((d) => d.id)));
    await expect.poll(async () => (await deliveries(jobId)).nodes.map((d: { status: string }) => d.status), { timeout: 30_000 }).toEqual(before.map(() => 'DELIVERED'));
  }, 180_000);
});
