import os from 'node:os';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkerProcess } from '../../src/entities';
import { removeSilentWorkers } from '../../src/services/workers';
import { errorCode, gql, gqlUpload, ok, signUp, startTestPlatform, type TestPlatform } from './helpers';
import { createModel, defaultBaseModelId, newAdminKey } from './setup';

const WORKERS = '{ workers { id host pid device startedAt lastHeartbeatAt currentJobIds } }';


/** What admins see of the workers and of every tenant's jobs and models. */
describe('admin: workers and tenants', () => {
  let platform: TestPlatform;
  let admin: string;
  let user: { key: string; userId: string };
  let other: { key: string; userId: string };

  beforeAll(async () => {
    platform = await startTestPlatform();
    admin = await newAdminKey(platform, 'root@example.org');
    user = await signUp(platform.url, 'worker-user@example.org');
    other = await signUp(platform.url, 'other-user@example.org');
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('lists this process as a worker, with the job it runs while it runs it; admins only', async () => {
    const [worker] = (await ok(gql(platform.url, WORKERS, {}, admin))).workers;
    expect(worker).toMatchObject({ host: os.hostname(), pid: process.pid, device: 'cpu', currentJobIds: [] });
    expect(Date.now() - Date.parse(worker.lastHeartbeatAt)).toBeLessThan(60_000);
    expect(errorCode(await gql(platform.url, WORKERS, {}, user.key))).toBe('FORBIDDEN');

    // A fine-tune long enough to be seen running.
    const baseModelId = await defaultBaseModelId(platform, user.key);
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#a4a' } }).png().toBuffer();
    const photo = (await ok(gqlUpload(platform.url, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: png, name: 'p.png', type: 'image/png' }, user.key))).uploadInstanceImage.id;
    const jobId = (await ok(gql(platform.url, 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } } }', {
      input: { target: 'PRIVATE', baseModelId, category: 'vase', kind: 'OBJECT', method: 'LORA', steps: 200, instanceImageIds: [photo] },
    }, user.key))).startFineTune.job.id;
    const seen = async () => (await ok(gql(platform.url, WORKERS, {}, admin))).workers[0].currentJobIds;
    for (const deadline = Date.now() + 60_000; !(await seen()).includes(jobId);) {
      if (Date.now() > deadline) throw new Error('the worker never showed the job');
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await ok(gql(platform.url, 'mutation($id: ID!) { cancelJob(id: $id) { status } }', { id: jobId }, user.key));
    for (const deadline = Date.now() + 60_000; (await seen()).length;) {
      if (Date.now() > deadline) throw new Error('the worker kept the canceled job');
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }, 120_000);

  it('forgets workers silent past the heartbeat timeout (they died), and a live one writes itself back', async () => {
    const workers = platform.services.db.getRepository(WorkerProcess);
    await workers.insert({ id: '00000000-0000-4000-8000-000000000001', host: 'gone', pid: 1, device: 'cuda', lastHeartbeatAt: new Date(Date.now() - 3_600_000) });
    expect((await ok(gql(platform.url, WORKERS, {}, admin))).workers.map((w: { host: string }) => w.host)).toContain('gone');
    await removeSilentWorkers(platform.services.db, 600);
    expect((await ok(gql(platform.url, WORKERS, {}, admin))).workers.map((w: { host: string }) => w.host)).toEqual([os.hostname()]);
  });

  it('lets admins read any tenant’s jobs and models, and list one user’s; others only their own', async () => {
    const modelId = await createModel(platform, other.key);
    const jobId = (await ok(gql(platform.url, 'mutation($m: ID!) { generateImages(input: { modelId: $m, prompt: "x", steps: 1 }) { id } }', { m: modelId }, other.key))).generateImages.id;

    expect((await ok(gql(platform.url, 'query($id: ID!) { model(id: $id) { id ownerId } }', { id: modelId }, admin))).model).toEqual({ id: modelId, ownerId: other.userId });
    expect((await ok(gql(platform.url, 'query($id: ID!) { job(id: $id) { id ownerId } }', { id: jobId }, admin))).job).toEqual({ id: jobId, ownerId: other.userId });
    const byOwner = await ok(gql(platform.url, 'query($o: ID!) { jobs(ownerId: $o) { nodes { id } } models(ownerId: $o) { nodes { id } } }', { o: other.userId }, admin));
    expect(byOwner.jobs.nodes.map((j: { id: string }) => j.id)).toEqual([jobId]);
    expect(byOwner.models.nodes.map((m: { id: string }) => m.id)).toEqual([modelId]);

    expect(errorCode(await gql(platform.url, 'query($id: ID!) { model(id: $id) { id } }', { id: modelId }, user.key))).toBe('NOT_FOUND');
    expect(errorCode(await gql(platform.url, 'query($id: ID!) { job(id: $id) { id } }', { id: jobId }, user.key))).toBe('NOT_FOUND');
    expect(errorCode(await gql(platform.url, 'query($o: ID!) { jobs(ownerId: $o) { nodes { id } } }', { o: other.userId }, user.key))).toBe('FORBIDDEN');
    expect(errorCode(await gql(platform.url, 'query($o: ID!) { models(ownerId: $o) { nodes { id } } }', { o: other.userId }, user.key))).toBe('FORBIDDEN');
    expect((await ok(gql(platform.url, 'query($o: ID!) { jobs(ownerId: $o) { totalCount } }', { o: other.userId }, other.key))).jobs.totalCount).toBe(1);
  });
});
