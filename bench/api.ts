// The API under load: `npm run bench:api` (DURATION=seconds per scenario, default 10; WARMUP=seconds
// whose requests the percentiles leave out, default 2; ONLY=a word of the scenarios to run, or several
// separated by commas; CPU_PROF=dir to write the server's CPU profile there; BASELINE=the folder of
// another checkout, e.g. a worktree of main, to measure it beside this one, and BASELINE_ENV="NAME=value
// ..." for settings only the baseline gets, e.g. BASELINE=. BASELINE_ENV=API_PROCESSES=1
// API_PROCESSES=2 to compare one API process with two).
// The platform runs as its own process (ROLE=api, so no worker competes for the cores), as `npm start`
// would start it; autocannon drives it from this process over loopback. Prints one markdown row per
// scenario. With BASELINE, both platforms run seeded alike and each scenario runs on the baseline, then
// on this checkout, back to back: on a machine shared with other work, both see the same load.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import autocannon from 'autocannon';
import pg from 'pg';
import { embeddedPostgresUrl, removeEmbeddedPostgres } from '../src/storage/embedded-postgres';

const DURATION = Number(process.env.DURATION ?? 10);
/**
 * Seconds at the start of each scenario whose requests the steady-state percentiles leave out (WARMUP,
 * default 2). A run's first second holds its new connections' first requests, which wait behind the
 * established ones (a plain node:http server shows the same), and code V8 has not optimized yet: in a
 * 10-second run at 200 connections those few hundred requests alone made p99. The whole run's p99 is
 * printed beside it.
 */
const WARMUP_MS = Number(process.env.WARMUP ?? 2) * 1000;
const ROWS = 50;
const JOBS = 10_000;
/** Linux's USER_HZ, the unit of /proc/<pid>/stat's times, is 100 on every common build. */
const CLOCK_TICKS_PER_SECOND = 100;

interface Platform {
  label: string;
  url: string;
  /** The embedded PostgreSQL, for seeding. */
  databaseUrl: string;
  /** CPU time the platform has used, in ms (user + system, from /proc): its node processes (API_PROCESSES),
   * and the embedded PostgreSQL (its backends and those it reaped). */
  cpuMs(): Promise<{ server: number; database: number }>;
  /** What the server logged at error level or above since the last call, by message. */
  takeErrors(): Map<string, number>;
  stop(): Promise<void>;
}

/** `npm start` of the checkout in `dir` (its own node arguments and sources), on a fresh data folder. */
async function startPlatform(label: string, dir: string, settings: Record<string, string> = {}): Promise<Platform> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'bd-bench-api-'));
  const profile = process.env.CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.CPU_PROF}`] : [];
  // The node arguments of `npm start` ("exec node <args>"), so the bench runs what users run.
  const startArgs = (JSON.parse(await fs.readFile(path.join(dir, 'package.json'), 'utf8')).scripts.start as string).split(' ').slice(2);
  const server = spawn(process.execPath, [...profile, ...startArgs], {
    cwd: dir,
    env: {
      ...process.env,
      DATA_DIR: dataDir,
      PORT: '0',
      HOST: '127.0.0.1',
      ROLE: 'api',
      LOG_LEVEL: 'info',
      // Submissions are measured, not refused: the limits are tested elsewhere.
      MAX_ACTIVE_JOBS_PER_USER: '100000000',
      MAX_IMAGES_PER_DAY_PER_USER: '100000000',
      MAX_JOBS_PER_MINUTE_PER_USER: '100000000',
      MAX_REQUESTS_PER_MINUTE_PER_KEY: '100000000',
      ...settings,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const logged = new Map<string, Record<string, any>>();
  let errors = new Map<string, number>();
  readline.createInterface({ input: server.stdout! }).on('line', (line) => {
    try {
      const entry = JSON.parse(line);
      if (!logged.has(entry.msg)) logged.set(entry.msg, entry);
      const message = `${entry.msg}: ${entry.err?.message ?? ''}`;
      if (entry.level >= 50) errors.set(message, (errors.get(message) ?? 0) + 1);
    } catch {
      // not a log line
    }
  });
  const stop = async () => {
    if (server.exitCode === null) {
      const exited = new Promise((resolve) => server.once('exit', resolve));
      server.kill('SIGTERM');
      await exited;
    }
    await removeEmbeddedPostgres(path.join(dataDir, 'postgres'));
    await fs.rm(dataDir, { recursive: true, force: true });
  };
  try {
    const { url } = await waitForLog(server, logged, 'GraphQL API listening');
    const { port } = await waitForLog(server, logged, 'embedded PostgreSQL started');
    return {
      label,
      url,
      databaseUrl: embeddedPostgresUrl(port),
      cpuMs: () => processTreeCpuMs(server.pid!),
      takeErrors: () => {
        const taken = errors;
        errors = new Map();
        return taken;
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function waitForLog(server: ChildProcess, logged: Map<string, Record<string, any>>, msg: string): Promise<Record<string, any>> {
  for (let i = 0; i < 1200; i++) {
    const entry = logged.get(msg);
    if (entry) return entry;
    if (server.exitCode !== null) throw new Error(`the server exited before "${msg}"`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no "${msg}" within 2 minutes`);
}

/** User + system time of a /proc/<pid>/stat line, in ms; with `reaped`, that of its waited-for children too. */
function cpuMs(stat: string, reaped: boolean): number {
  const fields = stat.split(') ')[1].split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]) + (reaped ? Number(fields[13]) + Number(fields[14]) : 0);
  return (ticks * 1000) / CLOCK_TICKS_PER_SECOND;
}

/**
 * CPU time of `root` and the processes below it that are not PostgreSQL's (API processes), and that of the
 * embedded PostgreSQL's with the children each reaped: processes that come and go (autovacuum workers) still
 * count, so the sums only grow.
 */
async function processTreeCpuMs(root: number): Promise<{ server: number; database: number }> {
  const processes = new Map<number, { parent: number; stat: string }>();
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8').catch(() => null);
    if (stat) processes.set(Number(name), { parent: Number(stat.split(') ')[1].split(' ')[1]), stat }); // else it exited meanwhile
  }
  const below = (pid: number): boolean => {
    for (let p = processes.get(pid)?.parent; p; p = processes.get(p)?.parent) if (p === root) return true;
    return false;
  };
  const sums = { server: 0, database: 0 };
  for (const [pid, { stat }] of processes) {
    if (pid === root || (below(pid) && !stat.includes('(postgres)'))) sums.server += cpuMs(stat, false);
    else if (below(pid)) sums.database += cpuMs(stat, true);
  }
  return sums;
}

interface Scenario {
  name: string;
  connections: number;
  query: string;
  variables?: object;
  key: string;
  expect: number;
}

/**
 * Through the API: a user with 50 models (a concept each) and 10,000 finished generation jobs (two
 * images each), a revoked key, and a second user who submits generations. Returns the scenarios.
 */
async function seed(platform: Platform): Promise<Scenario[]> {
  const gql = async (query: string, variables: Record<string, unknown> = {}, key?: string) => {
    const response = await fetch(platform.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    const body = (await response.json()) as { data?: any; errors?: unknown[] };
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data;
  };
  const { secret: key, user } = (await gql('mutation { signUp(email: "bench@example.org") { secret user { id } } }')).signUp;
  const baseModelId = (await gql('{ baseModels { id } }', {}, key)).baseModels[0].id;
  for (let i = 0; i < ROWS; i++) {
    const modelId = (await gql('mutation($b: ID!) { createModel(input: { name: "m", kind: PRIVATE_META, baseModelId: $b }) { id } }', { b: baseModelId }, key)).createModel.id;
    await gql('mutation($m: ID!) { createConcept(input: { modelId: $m, category: "dog", kind: OBJECT }) { id } }', { m: modelId }, key);
  }
  const db = new pg.Client({ connectionString: platform.databaseUrl });
  await db.connect();
  await db.query(
    `WITH jobs AS (
       INSERT INTO job (type, status, params, "ownerId", steps, step, progress)
       SELECT 'GENERATE', 'SUCCEEDED', '{}', $1, 20, 20, 1 FROM generate_series(1, $2) RETURNING id)
     INSERT INTO image ("objectKey", "jobId", seed, prompt, width, height)
     SELECT 'images/' || jobs.id || '/' || n || '.png', jobs.id, n, 'a dog', 64, 64 FROM jobs, generate_series(0, 1) AS n`,
    [user.id, JOBS],
  );
  // Statistics now, not whenever autovacuum comes by in the middle of a scenario.
  await db.query('VACUUM ANALYZE');
  await db.end();
  const revoked = (await gql('mutation { createApiKey(name: "revoked") { secret apiKey { id } } }', {}, key)).createApiKey;
  await gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: revoked.apiKey.id }, key);
  const unknownKey = `${key.slice(0, 12)}${'A'.repeat(key.length - 12)}`;
  // Submissions come from a second user: the first one's 20,000 images of today would be counted by
  // the images-per-day check (up to the limit, lifted here), which no real user reaches past the limit.
  const submitter = (await gql('mutation { signUp(email: "submitter@example.org") { secret } }')).signUp.secret;
  const submitterModel = (await gql('mutation($b: ID!) { createModel(input: { name: "m", kind: PRIVATE, baseModelId: $b }) { id } }', { b: baseModelId }, submitter)).createModel.id;

  return [
    { name: '`{ me { id email } }`', connections: 50, query: '{ me { id email } }', key, expect: 200 },
    { name: '`{ me { id email } }`', connections: 200, query: '{ me { id email } }', key, expect: 200 },
    {
      name: `\`models\` with baseModel, versions, concepts (${ROWS} models)`,
      connections: 50,
      query: `{ models(first: ${ROWS}) { nodes { id name baseModel { id name } headVersion { id } versions { nodes { id number } } concepts { id token category } } } }`,
      key,
      expect: 200,
    },
    // At 50 connections a page's latency is mostly the queue of the 49 others; one connection shows the
    // page's own.
    ...[50, 1].map((connections) => ({
      name: `first ${ROWS} of ${JOBS.toLocaleString('en')} \`jobs\` with their images`,
      connections,
      query: `{ jobs(first: ${ROWS}) { nodes { id status images { id url } } pageInfo { hasNextPage endCursor } } }`,
      key,
      expect: 200,
    })),
    { name: 'unknown key (401)', connections: 50, query: '{ me { id } }', key: unknownKey, expect: 401 },
    { name: 'revoked key (401)', connections: 50, query: '{ me { id } }', key: revoked.secret, expect: 401 },
    { name: 'malformed key (401)', connections: 50, query: '{ me { id } }', key: 'not-a-key', expect: 401 },
    ...[50, 200].map((connections) => ({
      name: '`generateImages` submission',
      connections,
      query: 'mutation($m: ID!) { generateImages(input: { modelId: $m, prompt: "a dog", steps: 20 }) { id } }',
      variables: { m: submitterModel },
      key: submitter,
      expect: 200,
    })),
  ];
}

/** The p-th percentile (0-100) of sorted latencies, nearest rank, in whole ms as autocannon prints them. */
function percentile(sorted: Float64Array, p: number): number {
  return Math.round(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]);
}

async function measure(platform: Platform, scenario: Scenario): Promise<string> {
  const before = await platform.cpuMs();
  // Each response's latency and when its request was sent, for the steady-state percentiles.
  const latencies: number[] = [];
  const sentAt: number[] = [];
  const start = performance.now();
  const result = await autocannon({
    setupClient: (client) =>
      client.on('response', (_status: number, _bytes: number, ms: number) => {
        latencies.push(ms);
        sentAt.push(performance.now() - ms - start);
      }),
    url: platform.url,
    method: 'POST',
    connections: scenario.connections,
    duration: DURATION,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${scenario.key}` },
    body: JSON.stringify({ query: scenario.query, variables: scenario.variables ?? {} }),
    // A 200 carrying GraphQL errors (a refusal) is not the answer measured.
    ...(scenario.expect === 200 ? { verifyBody: (body) => !String(body).includes('"errors"') } : {}),
  });
  const after = await platform.cpuMs();
  const [cpu, databaseCpu] = (['server', 'database'] as const).map((part) => ((after[part] - before[part]) / result.requests.total).toFixed(2));
  const logged = platform.takeErrors();
  if (logged.size) console.error([...logged.keys()].join('\n'));
  const errors = [...logged.values()].reduce((sum, n) => sum + n, 0);
  const unexpected =
    Object.entries(result.statusCodeStats ?? {})
      .filter(([status]) => Number(status) !== scenario.expect)
      .reduce((sum, [, stats]) => sum + (stats as { count: number }).count, 0) +
    result.errors +
    result.timeouts +
    result.mismatches;
  const steady = Float64Array.from(latencies.filter((_, i) => sentAt[i] >= WARMUP_MS)).sort();
  const name = platform.label ? `${scenario.name} (${platform.label})` : scenario.name;
  return `| ${name} | ${scenario.connections} | ${Math.round(result.requests.average)} | ${percentile(steady, 50)} ms | ${percentile(steady, 99)} ms | ${result.latency.p99} ms | ${cpu} ms | ${databaseCpu} ms | ${unexpected} | ${errors} |`;
}

const platforms: Platform[] = [];
try {
  if (process.env.BASELINE) {
    const settings = Object.fromEntries((process.env.BASELINE_ENV ?? '').split(' ').filter(Boolean).map((s) => s.split(/=(.*)/s).slice(0, 2)));
    platforms.push(await startPlatform('baseline', path.resolve(process.env.BASELINE), settings));
  }
  platforms.push(await startPlatform(process.env.BASELINE ? 'this checkout' : '', process.cwd()));
  const scenarios = await Promise.all(platforms.map(seed));
  console.log(`\nAPI under load: ${DURATION} s per scenario, ${os.cpus().length} CPUs (${os.cpus()[0].model}), Node ${process.version}\n`);
  console.log(`p50 and p99 leave out requests sent in each scenario's first ${WARMUP_MS / 1000} s (WARMUP); the whole run's p99 beside them.\n`);
  console.log('| request | connections | req/s | p50 | p99 | whole run p99 | server CPU per request | database CPU per request | unexpected responses | server errors |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  const only = process.env.ONLY?.split(',');
  for (const [i, scenario] of scenarios[0].entries()) {
    if (only && !only.some((word) => scenario.name.includes(word))) continue;
    for (const [p, platform] of platforms.entries()) console.log(await measure(platform, scenarios[p][i]));
  }
} finally {
  for (const platform of platforms) await platform.stop();
}
