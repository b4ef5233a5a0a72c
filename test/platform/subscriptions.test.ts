import { parse, type ExecutionResult } from 'graphql';
import { createClient } from 'graphql-ws';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createContext } from '../../src/api/context';
import { createErrorFormatter } from '../../src/api/errors';
import { buildAppSchema } from '../../src/api/schema';
import { subscribeSharingEvents } from '../../src/api/shared-events';
import { Job, JobStatus, JobType, User } from '../../src/entities';
import { JOB_STATES_LISTENER } from '../../src/services/job-events';
import { failRunningJob, recordJobProgress } from '../../src/services/job-lifecycle';
import { gql, JOB_UPDATES, ok, sqlDuring, startTestPlatform, type JobUpdate, type TestPlatform } from './helpers';
import { userWithModel } from './setup';

const GENERATE = 'mutation($input: GenerateImagesInput!) { generateImages(input: $input) { id } }';
const CANCEL = 'mutation($id: ID!) { cancelJob(id: $id) { status } }';

/** A graphql-ws subscriber to one job: `first` once its first state came, `done` with all of them once the server completes. */
function subscribe(url: string, key: string, jobId: string): { first: Promise<void>; done: Promise<JobUpdate[]> } {
  const client = createClient({ url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${key}` }, retryAttempts: 0 });
  const updates: JobUpdate[] = [];
  let firstCame!: () => void;
  const first = new Promise<void>((resolve) => (firstCame = resolve));
  const done = new Promise<JobUpdate[]>((resolve, reject) => {
    client.subscribe<{ jobUpdated: JobUpdate }>(
      { query: JOB_UPDATES, variables: { id: jobId } },
      {
        next: ({ data, errors }) => {
          if (errors) return reject(new Error(JSON.stringify(errors)));
          updates.push(data!.jobUpdated);
          firstCame();
        },
        error: (error) => reject(Array.isArray(error) ? new Error(JSON.stringify(error)) : error),
        complete: () => resolve(updates),
      },
    );
  }).finally(() => client.dispose());
  return { first, done };
}

describe('jobUpdated fan-out', () => {
  let platform: TestPlatform;
  let url: string;
  let key: string;
  let userId: string;
  let modelId: string;

  const generate = async (input: Record<string, unknown>): Promise<string> =>
    (await ok(gql(url, GENERATE, { input: { modelId, prompt: 'a sks dog', ...input } }, key))).generateImages.id;
  const statusOf = async (id: string) => (await platform.services.db.getRepository(Job).findOneByOrFail({ id })).status;
  const until = async (what: () => Promise<boolean>) => {
    while (!(await what())) await new Promise((resolve) => setTimeout(resolve, 20));
  };
  /** A long job the worker (one job at a time) is busy with, so the next one waits QUEUED while subscribers gather. */
  const occupyWorker = async () => {
    const id = await generate({ steps: 200, width: 64, height: 64, numImages: 4 });
    await until(async () => (await statusOf(id)) === 'RUNNING');
    return id;
  };

  beforeAll(async () => {
    platform = await startTestPlatform();
    url = platform.url;
    ({ key, userId, modelId } = await userWithModel(platform, 'subscriber@example.org'));
  }, 120_000);
  afterAll(() => platform?.stop());

  it('sends every subscriber of a generation the same full sequence of states that existed, and reads nothing per state from the shared pool', async () => {
    const SUBSCRIBERS = 200;
    const STEPS = 20;
    const blocker = await occupyWorker();
    const jobId = await generate({ steps: STEPS, numImages: 4, seed: 1 });
    const subscribers = Array.from({ length: SUBSCRIBERS }, () => subscribe(url, key, jobId));
    await Promise.all(subscribers.map((s) => s.first));

    // From here the job runs: the blocker is canceled, the worker claims the job, steps, finishes.
    await ok(gql(url, CANCEL, { id: blocker }, key));
    let received: JobUpdate[][] = [];
    const statements = await sqlDuring(platform.services.db, async () => {
      received = await Promise.all(subscribers.map((s) => s.done));
    });

    const sequence = received[0];
    for (const other of received) expect(other).toEqual(sequence);
    // Every state, in order: queued, claimed, each step once, then done with its images (the only
    // state with any: they are written in the transaction that makes the job SUCCEEDED).
    // The steps asked for, though the default sampler (PNDM) evaluates one timestep twice.
    expect(sequence.map((u) => [u.status, u.step, u.steps, u.imageIds.length])).toEqual([
      ['QUEUED', 0, STEPS, 0],
      ['RUNNING', 0, STEPS, 0],
      ...Array.from({ length: STEPS }, (_, i) => ['RUNNING', i + 1, STEPS, 0]),
      ['SUCCEEDED', STEPS, STEPS, 4],
    ]);
    for (const u of sequence) expect(u).toMatchObject({ jobId, error: null });

    // Subscribers read nothing from the pool the worker writes through. What it carried is the run's
    // own work: one transaction per state (START TRANSACTION, UPDATE, notify, COMMIT), and once each
    // the blocker's last step, the claim's read, the model lookups and the images' insert (about a
    // dozen); a read per subscriber and state, as subscribers did before, would be thousands.
    expect(statements.length, statements.join('\n')).toBeLessThanOrEqual(4 * sequence.length + 30);
  }, 120_000);

  it('reads the job again after losing its listening connection, and follows it from there', async () => {
    const blocker = await occupyWorker();
    const jobId = await generate({ steps: 2 });
    const subscriber = subscribe(url, key, jobId);
    await subscriber.first;

    // The connection drops; while it is gone (reconnecting takes a second) the job is canceled, so
    // only the read after reconnecting can tell the subscriber.
    const rows = await platform.services.db.query(
      'SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity WHERE application_name = $1',
      [JOB_STATES_LISTENER],
    );
    expect(rows).toEqual([{ terminated: true }]);
    await ok(gql(url, CANCEL, { id: jobId }, key));
    expect((await subscriber.done).map((u) => u.status)).toEqual(['QUEUED', 'CANCELED']);

    // And notifications flow again.
    const next = subscribe(url, key, blocker);
    await next.first;
    await ok(gql(url, CANCEL, { id: blocker }, key));
    expect((await next.done).at(-1)!.status).toBe('CANCELED');
  }, 60_000);

  it('ends a subscriber that falls 1,000 states behind with a CONFLICT error after the states it had, and keeps the others going', async () => {
    const { db } = platform.services;
    const job = await db.getRepository(Job).save({ type: JobType.GENERATE, ownerId: userId, params: {}, status: JobStatus.RUNNING, steps: 2000 });
    const viewer = await db.getRepository(User).findOneByOrFail({ id: userId });
    const schema = await buildAppSchema();
    // The server's own subscribe, as graphql-ws calls it for each subscriber, without the sockets (whose
    // buffers would take far more than 1,000 states before a reader that stopped held anything up).
    const subscribeInProcess = async () =>
      (await subscribeSharingEvents({ schema, document: parse(JOB_UPDATES), variableValues: { id: job.id }, contextValue: createContext(viewer, platform.services) })) as AsyncIterableIterator<ExecutionResult>;
    const collect = async (stream: AsyncIterableIterator<ExecutionResult>) => {
      const results: ExecutionResult[] = [];
      for await (const result of stream) results.push(result);
      return results;
    };
    const stepsOf = (results: ExecutionResult[]) => results.map((r) => (r.data as { jobUpdated: JobUpdate }).jobUpdated.step);
    const slow = await subscribeInProcess(); // not read until the end
    const steady = collect(await subscribeInProcess());

    for (let step = 1; step <= 1001; step++) await recordJobProgress(db, job.id, { step, steps: 2000 });
    // A message too long for a notification is cut to 1,000 characters in the row, and so in the state.
    await failRunningJob(db, job.id, 'x'.repeat(10_000));
    const steadyResults = await steady;
    expect(stepsOf(steadyResults)).toEqual([...Array.from({ length: 1002 }, (_, i) => i), 1001]);
    expect(steadyResults.at(-1)!.data).toMatchObject({ jobUpdated: { status: 'FAILED', error: 'x'.repeat(1000) } });

    const slowResults = await collect(slow);
    expect(stepsOf(slowResults.slice(0, -1))).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    const [error] = slowResults.at(-1)!.errors!;
    // What the server's formatter makes of it for the client.
    expect(createErrorFormatter(pino({ level: 'silent' }))(error.toJSON(), error)).toEqual({
      message: 'This subscription fell 1000 states behind its job and was ended; subscribe again',
      path: ['jobUpdated'],
      extensions: { code: 'CONFLICT' },
    });
  }, 60_000);
});
