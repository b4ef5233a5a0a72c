import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Job, JobStatus, JobType } from '../../src/entities';
import { failRunningJob, recordJobProgress } from '../../src/services/job-lifecycle';
import { errorCode, gql, ok, startTestPlatform, type TestPlatform } from './helpers';
import { userWithModel, type UserWithModel } from './setup';

/**
 * Where a job stands in the queue and when it should run, and a fine-tune's kept loss series. No
 * worker runs here: jobs stay QUEUED, and rows stand in for what workers would have run and reported.
 */
describe('queue positions, estimates and loss history', () => {
  let platform: TestPlatform;
  let url: string;
  let a: UserWithModel;
  let b: UserWithModel;

  const generate = async (who: UserWithModel, steps: number) =>
    (await ok(gql(url, 'mutation($m: ID!, $s: Int!) { generateImages(input: { modelId: $m, prompt: "x", steps: $s }) { id } }', { m: who.modelId, s: steps }, who.key))).generateImages.id as string;
  const QUEUE = 'query($id: ID!) { job(id: $id) { status queuePosition estimatedStartAt estimatedFinishAt } }';
  const queue = async (id: string, key = a.key) => {
    const { job } = await ok(gql(url, QUEUE, { id }, key));
    const seconds = (iso: string | null) => (iso === null ? null : (Date.parse(iso) - Date.now()) / 1000);
    return { ...job, startsIn: seconds(job.estimatedStartAt), finishesIn: seconds(job.estimatedFinishAt) };
  };
  const jobs = () => platform.services.db.getRepository(Job);

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
    url = platform.url;
    a = await userWithModel(platform, 'queue-a@example.org');
    b = await userWithModel(platform, 'queue-b@example.org');
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('counts everyone’s queued jobs of a type ahead, and estimates from the measured pace', async () => {
    const first = await generate(a, 10);
    const second = await generate(b, 20);
    const third = await generate(a, 30);
    // Nothing has run yet: positions, but no pace to estimate from.
    expect(await queue(first)).toMatchObject({ status: 'QUEUED', queuePosition: 1, estimatedStartAt: null, estimatedFinishAt: null });
    expect((await queue(third)).queuePosition).toBe(3);

    // A finished generation ran 10 steps in 20 s (2 s a step); a running one is at step 5 of 10 after 10 s.
    const now = Date.now();
    await jobs().save({ type: JobType.GENERATE, ownerId: b.userId, status: JobStatus.SUCCEEDED, params: {}, steps: 10, step: 10, startedAt: new Date(now - 60_000), finishedAt: new Date(now - 40_000) });
    const running = await jobs().save({ type: JobType.GENERATE, ownerId: b.userId, status: JobStatus.RUNNING, params: {}, steps: 10, step: 5, startedAt: new Date(now - 10_000) });

    // The running job has 5 steps left (10 s); then each queued job's steps at 2 s each.
    const ahead = [await queue(first), await queue(second, b.key), await queue(third)];
    expect(ahead.map((j) => j.queuePosition)).toEqual([1, 2, 3]);
    for (const [j, start, finish] of [[ahead[0], 10, 30], [ahead[1], 30, 70], [ahead[2], 70, 130]] as const) {
      expect(j.startsIn).toBeGreaterThan(start - 3);
      expect(j.startsIn).toBeLessThan(start + 1);
      expect(j.finishesIn! - j.startsIn!).toBeCloseTo(finish - start, 3);
    }
    expect(errorCode(await gql(url, QUEUE, { id: running.id }, a.key))).toBe('NOT_FOUND'); // others' jobs stay invisible
    const runningSeen = await ok(gql(url, QUEUE, { id: running.id }, b.key));
    expect(runningSeen.job).toMatchObject({ status: 'RUNNING', queuePosition: null, estimatedStartAt: null });
    const runningFinishesIn = (Date.parse(runningSeen.job.estimatedFinishAt) - Date.now()) / 1000;
    expect(runningFinishesIn).toBeGreaterThan(7);
    expect(runningFinishesIn).toBeLessThan(11);

    // Another type has its own queue; a canceled job leaves the line.
    await ok(gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { id } }', { id: first }, a.key));
    expect(await queue(first)).toMatchObject({ status: 'CANCELED', queuePosition: null, estimatedStartAt: null, estimatedFinishAt: null });
    expect((await queue(second, b.key)).queuePosition).toBe(1);
    expect((await queue(third)).queuePosition).toBe(2);
    const list = await ok(gql(url, '{ jobs(status: QUEUED) { nodes { id queuePosition } } }', {}, a.key));
    expect(list.jobs.nodes).toEqual([{ id: third, queuePosition: 2 }]);
  });

  it('sends the queue position and estimates with each job update', async () => {
    const jobId = await generate(a, 4);
    const client = createClient({ url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${a.key}` }, retryAttempts: 0 });
    try {
      const update = await new Promise<any>((resolve, reject) => {
        client.subscribe(
          { query: 'subscription($id: ID!) { jobUpdated(jobId: $id) { status queuePosition estimatedStartAt estimatedFinishAt } }', variables: { id: jobId } },
          { next: ({ data, errors }) => (errors ? reject(new Error(JSON.stringify(errors))) : resolve(data!.jobUpdated)), error: reject, complete: () => {} },
        );
      });
      const position = (await queue(jobId)).queuePosition;
      expect(update).toMatchObject({ status: 'QUEUED', queuePosition: position });
      expect(position).toBeGreaterThan(1);
      expect(Date.parse(update.estimatedFinishAt)).toBeGreaterThan(Date.parse(update.estimatedStartAt));
    } finally {
      await client.dispose();
    }
  });

  it('keeps a fine-tune’s loss at every step after the job ends, downsampled on request', async () => {
    const job = await jobs().save({ type: JobType.FINETUNE, ownerId: a.userId, status: JobStatus.RUNNING, params: {}, steps: 10, startedAt: new Date() });
    const losses = [1, 0.9, 0.8, 0.75, 0.7, 0.6, 0.55, 0.5, 0.45, 0.4];
    // As the job runner reports steps; step 3 is reported twice (a retried write), the later value kept.
    await recordJobProgress(platform.services.db, job.id, { step: 3, steps: 10, loss: 5 });
    for (const [i, loss] of losses.entries()) await recordJobProgress(platform.services.db, job.id, { step: i + 1, steps: 10, loss });
    await failRunningJob(platform.services.db, job.id, 'stopped for the test');

    const HISTORY = 'query($id: ID!, $points: Int) { job(id: $id) { status lossHistory(points: $points) { step loss } } }';
    const all = (await ok(gql(url, HISTORY, { id: job.id }, a.key))).job;
    expect(all.status).toBe('FAILED');
    expect(all.lossHistory.map((p: { step: number }) => p.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    all.lossHistory.forEach((p: { loss: number }, i: number) => expect(p.loss).toBeCloseTo(losses[i], 5));
    const five = (await ok(gql(url, HISTORY, { id: job.id, points: 5 }, a.key))).job.lossHistory;
    expect(five.map((p: { step: number }) => p.step)).toEqual([2, 4, 6, 8, 10]);
    five.forEach((p: { loss: number }, i: number) => expect(p.loss).toBeCloseTo((losses[2 * i] + losses[2 * i + 1]) / 2, 5));
    expect(errorCode(await gql(url, HISTORY, { id: job.id, points: 1 }, a.key))).toBe('BAD_USER_INPUT');
    expect(errorCode(await gql(url, HISTORY, { id: job.id }, b.key))).toBe('NOT_FOUND');
  });
});
