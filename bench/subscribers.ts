/**
 * Many graphql-ws subscribers on one generation (4 images x 20 steps on the bundled base model), the
 * whole platform in this process (ROLE=all): the job's time with one subscriber and with SUBSCRIBERS,
 * how many subscribers got every state in order, any state one got that never existed, and how long
 * after the job's end the last subscriber got its final state. `npm run bench:subscribers`
 * (SUBSCRIBERS, default 1000; RUNS of each, default 3); results go in bench/RESULTS.md.
 *
 * Each run queues a long job first and cancels it once every subscriber has its first state, so the
 * measured job starts with all of them listening. The subscribers live in a child process (this file
 * again, with BENCH_SUBSCRIBERS set), as an external load generator would, so their own work stays
 * off the server's event loop; both share this machine's cores.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { Job } from '../src/entities';
import { gql, signUp, startTestPlatform, type GraphQLResponse } from '../test/platform/helpers';

const SUBSCRIBERS = Number(process.env.SUBSCRIBERS ?? 1000);
const RUNS = Number(process.env.RUNS ?? 3);
const JOB = { prompt: 'a photo of a dog', steps: 20, numImages: 4, seed: 1 };
/** What keeps the worker (one job at a time) busy while the subscribers connect. */
const BLOCKER = { prompt: 'blocker', steps: 200, width: 64, height: 64, numImages: 4 };
/** Clients connecting at once; more overflow the listen backlog, and the kernel retries after a second. */
const CONNECT_BATCH = 100;

interface Update {
  status: string;
  step: number;
  steps: number;
  progress: number;
  imageIds: string[];
}

const UPDATES = 'subscription($id: ID!) { jobUpdated(jobId: $id) { status step steps progress imageIds } }';

interface Subscriber {
  first: Promise<void>;
  /** Every state, and when (Date.now()) the last one came. */
  done: Promise<{ updates: Update[]; lastAt: number }>;
}

function subscribe(url: string, key: string, jobId: string): Subscriber {
  const client = createClient({ url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${key}` }, retryAttempts: 0 });
  const updates: Update[] = [];
  let lastAt = 0;
  let firstCame!: () => void;
  const first = new Promise<void>((resolve) => (firstCame = resolve));
  const done = new Promise<{ updates: Update[]; lastAt: number }>((resolve, reject) => {
    client.subscribe<{ jobUpdated: Update }>(
      { query: UPDATES, variables: { id: jobId } },
      {
        next: ({ data, errors }) => {
          if (errors) return reject(new Error(JSON.stringify(errors)));
          lastAt = Date.now();
          updates.push(data!.jobUpdated);
          firstCame();
        },
        error: (error) => reject(Array.isArray(error) ? new Error(JSON.stringify(error)) : error),
        complete: () => resolve({ updates, lastAt }),
      },
    );
  }).finally(() => client.dispose());
  return { first, done };
}

const describeState = (u: Update) => `${u.status} ${u.step}/${u.steps} ${u.imageIds.length} images`;

/** What the subscriber process is asked, and answers. */
interface Follow {
  url: string;
  key: string;
  jobId: string;
  count: number;
}
type Answer = { ready: true } | { ready?: undefined; sequences: Update[][]; lastAt: number[] };

/** The subscriber process: for each Follow, opens the subscribers, says when all have a first state, then sends what each got. */
function subscriberProcess(): void {
  process.on('message', async ({ url, key, jobId, count }: Follow) => {
    const subscribers: Subscriber[] = [];
    for (let i = 0; i < count; i += CONNECT_BATCH) {
      const batch = Array.from({ length: Math.min(CONNECT_BATCH, count - i) }, () => subscribe(url, key, jobId));
      await Promise.all(batch.map((s) => s.first));
      subscribers.push(...batch);
    }
    process.send!({ ready: true } satisfies Answer);
    const received = await Promise.all(subscribers.map((s) => s.done));
    process.send!({ sequences: received.map(({ updates }) => updates), lastAt: received.map(({ lastAt }) => lastAt) } satisfies Answer);
  });
}

/**
 * The states the job went through: QUEUED, RUNNING as claimed (step 0 of the requested steps), each
 * step the engine reports (it counts the decoding as one), SUCCEEDED with the images.
 */
function statesThatExisted(final: Update): string[] {
  const total = final.steps;
  return [
    describeState({ status: 'QUEUED', step: 0, steps: JOB.steps, progress: 0, imageIds: [] }),
    describeState({ status: 'RUNNING', step: 0, steps: JOB.steps, progress: 0, imageIds: [] }),
    ...Array.from({ length: total }, (_, i) => `RUNNING ${i + 1}/${total} 0 images`),
    describeState(final),
  ];
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function main() {
  const platform = await startTestPlatform({ ROLE: 'all' });
  const { url } = platform;
  const subscribers: ChildProcess = fork(import.meta.filename, [], { execArgv: ['--import', 'tsx'], env: { ...process.env, BENCH_SUBSCRIBERS: '1' } });
  const answer = async () => (await once(subscribers, 'message'))[0] as Answer;
  const ok = async (response: Promise<GraphQLResponse>) => {
    const r = await response;
    if (r.errors) throw new Error(JSON.stringify(r.errors));
    return r.data!;
  };
  try {
    const { key } = await signUp(url, 'bench@example.org');
    const bundled = (await ok(gql(url, '{ baseModels { id name } }', {}, key))).baseModels.find((m: { name: string }) => m.name === 'bundled-tiny-sd');
    const modelId = (await ok(gql(url, 'mutation($b: ID!) { createModel(input: { name: "bench", kind: PRIVATE, baseModelId: $b }) { id } }', { b: bundled.id }, key)))
      .createModel.id;
    const generate = async (input: object): Promise<string> =>
      (await ok(gql(url, 'mutation($input: GenerateImagesInput!) { generateImages(input: $input) { id } }', { input: { modelId, ...input } }, key))).generateImages.id;
    const row = (id: string) => platform.services.db.getRepository(Job).findOneByOrFail({ id });

    /** One job followed by `count` subscribers from before it starts. */
    const run = async (count: number) => {
      const blocker = await generate(BLOCKER);
      while ((await row(blocker)).status !== 'RUNNING') await new Promise((resolve) => setTimeout(resolve, 20));
      const jobId = await generate(JOB);
      subscribers.send({ url, key, jobId, count } satisfies Follow);
      await answer(); // every subscriber has the QUEUED state
      const cpuBefore = process.cpuUsage();
      await ok(gql(url, 'mutation($id: ID!) { cancelJob(id: $id) { id } }', { id: blocker }, key));
      const received = await answer();
      const cpu = process.cpuUsage(cpuBefore);
      if (received.ready) throw new Error('the subscriber process answered out of turn');
      const job = await row(jobId);
      const finishedAt = job.finishedAt!.getTime();
      const existed = statesThatExisted(received.sequences[0].at(-1)!);
      const sequences = received.sequences.map((updates) => updates.map(describeState));
      const invented = new Set(sequences.flatMap((states) => states.filter((state) => !existed.includes(state))));
      return {
        jobSeconds: (finishedAt - job.startedAt!.getTime()) / 1000,
        cpuMs: (cpu.user + cpu.system) / 1000,
        complete: sequences.filter((states) => states.join('\n') === existed.join('\n')).length,
        invented: [...invented],
        lastFinalMs: Math.max(...received.lastAt) - finishedAt,
        states: existed.length,
      };
    };

    await run(1); // warms the pipeline up
    console.log(`one generation (${JOB.numImages} images x ${JOB.steps} steps, bundled-tiny-sd), ${RUNS} runs each; job time = its row's finishedAt - startedAt`);
    const runs = new Map<number, Awaited<ReturnType<typeof run>>[]>();
    for (const count of [1, SUBSCRIBERS]) {
      runs.set(count, []);
      for (let i = 0; i < RUNS; i++) {
        const r = await run(count);
        runs.get(count)!.push(r);
        console.log(
          `${String(count).padStart(5)} subscribers: job ${r.jobSeconds.toFixed(3)} s; ${r.complete}/${count} got all ${r.states} states in order; ` +
            `states that never existed: ${r.invented.length ? r.invented.join(', ') : 'none'}; last final state ${r.lastFinalMs} ms after the job's end; ` +
            `platform CPU ${r.cpuMs.toFixed(0)} ms`,
        );
      }
    }
    const medianOf = (count: number, of: (r: Awaited<ReturnType<typeof run>>) => number) => median(runs.get(count)!.map(of));
    const alone = medianOf(1, (r) => r.jobSeconds);
    const crowded = medianOf(SUBSCRIBERS, (r) => r.jobSeconds);
    console.log(`median job time: ${alone.toFixed(3)} s alone (1 subscriber), ${crowded.toFixed(3)} s with ${SUBSCRIBERS} (${(crowded / alone).toFixed(2)}x)`);
    // CPU time holds when other processes share the cores, where wall times do not.
    const perState = ((medianOf(SUBSCRIBERS, (r) => r.cpuMs) - medianOf(1, (r) => r.cpuMs)) * 1000) / ((SUBSCRIBERS - 1) * runs.get(1)![0].states);
    console.log(`platform CPU per state delivered to a subscriber (median CPU with ${SUBSCRIBERS} - alone, over the extra deliveries): ${perState.toFixed(1)} us`);
  } finally {
    subscribers.kill();
    await platform.stop();
  }
}

if (process.env.BENCH_SUBSCRIBERS) subscriberProcess();
else await main();
