// The API under load: `npm run bench:api` (DURATION=seconds per scenario, default 10; ONLY=a word of
// the scenarios to run, or several separated by commas; CPU_PROF=dir to write the server's CPU profile there).
// The platform runs as its own process (ROLE=api, so no worker competes for the cores), as `npm start`
// would start it; autocannon drives it from this process over loopback. Prints one markdown row per scenario.
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import autocannon from 'autocannon';
import pg from 'pg';
import { embeddedPostgresUrl, removeEmbeddedPostgres } from '../src/storage/embedded-postgres';

const DURATION = Number(process.env.DURATION ?? 10);
const ROWS = 50;
const JOBS = 10_000;

const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'bd-bench-api-'));
const profile = process.env.CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.CPU_PROF}`] : [];
// The node arguments of `npm start` ("exec node <args>"), so the bench runs what users run.
const startArgs = (JSON.parse(await fs.readFile('package.json', 'utf8')).scripts.start as string).split(' ').slice(2);
const server = spawn(process.execPath, [...profile, ...startArgs], {
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
  },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const logged = new Map<string, Record<string, any>>();
/** What the server logged at error level or above, by message: a scenario's errors are counted here. */
const serverErrors = new Map<string, number>();
readline.createInterface({ input: server.stdout! }).on('line', (line) => {
  try {
    const entry = JSON.parse(line);
    if (!logged.has(entry.msg)) logged.set(entry.msg, entry);
    if (entry.level >= 50) serverErrors.set(`${entry.msg}: ${entry.err?.message ?? ''}`, (serverErrors.get(entry.msg) ?? 0) + 1);
  } catch {
    // not a log line
  }
});

/**
 * CPU time the server process has used, in ms (user + system, from /proc): per request, it says what a
 * request costs even when other processes share the cores and throughput moves with them.
 */
async function serverCpuMs(): Promise<number> {
  const fields = (await fs.readFile(`/proc/${server.pid}/stat`, 'utf8')).split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
}
/**
 * CPU time the server's descendants have used, in ms: the embedded PostgreSQL (whose backends are the
 * pools' connections, alive through a scenario) and S3. Per request, what the database spends on it.
 */
async function childrenCpuMs(): Promise<number> {
  const processes = new Map<number, { parent: number; ms: number }>();
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8').catch(() => null);
    if (!stat) continue; // it exited meanwhile
    const fields = stat.split(') ')[1].split(' ');
    processes.set(Number(name), { parent: Number(fields[1]), ms: ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND });
  }
  const isDescendant = (pid: number): boolean => {
    for (let p = processes.get(pid)?.parent; p; p = processes.get(p)?.parent) if (p === server.pid) return true;
    return false;
  };
  return [...processes].reduce((sum, [pid, { ms }]) => sum + (isDescendant(pid) ? ms : 0), 0);
}
/** Linux's USER_HZ, the unit of /proc/<pid>/stat's times, is 100 on every common build. */
const CLOCK_TICKS_PER_SECOND = 100;

async function waitForLog(msg: string): Promise<Record<string, any>> {
  for (let i = 0; i < 1200; i++) {
    const entry = logged.get(msg);
    if (entry) return entry;
    if (server.exitCode !== null) throw new Error(`the server exited before "${msg}"`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no "${msg}" within 2 minutes`);
}

try {
  const { url } = await waitForLog('GraphQL API listening');
  const { port } = await waitForLog('embedded PostgreSQL started');
  const gql = async (query: string, variables: Record<string, unknown> = {}, key?: string) => {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    const body = (await response.json()) as { data?: any; errors?: unknown[] };
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data;
  };

  // A user with 50 models (a concept each) and 10,000 finished generation jobs (two images each).
  const { secret: key, user } = (await gql('mutation { signUp(email: "bench@example.org") { secret user { id } } }')).signUp;
  const baseModelId = (await gql('{ baseModels { id } }', {}, key)).baseModels[0].id;
  for (let i = 0; i < ROWS; i++) {
    const modelId = (await gql('mutation($b: ID!) { createModel(input: { name: "m", kind: PRIVATE_META, baseModelId: $b }) { id } }', { b: baseModelId }, key)).createModel.id;
    await gql('mutation($m: ID!) { createConcept(input: { modelId: $m, category: "dog", kind: OBJECT }) { id } }', { m: modelId }, key);
  }
  const db = new pg.Client({ connectionString: embeddedPostgresUrl(port) });
  await db.connect();
  await db.query(
    `WITH jobs AS (
       INSERT INTO job (type, status, params, "ownerId", steps, step, progress)
       SELECT 'GENERATE', 'SUCCEEDED', '{}', $1, 20, 20, 1 FROM generate_series(1, $2) RETURNING id)
     INSERT INTO image ("objectKey", "jobId", seed, prompt, width, height)
     SELECT 'images/' || jobs.id || '/' || n || '.png', jobs.id, n, 'a dog', 64, 64 FROM jobs, generate_series(0, 1) AS n`,
    [user.id, JOBS],
  );
  await db.end();
  const revoked = (await gql('mutation { createApiKey(name: "revoked") { secret apiKey { id } } }', {}, key)).createApiKey;
  await gql('mutation($id: ID!) { revokeApiKey(id: $id) { id } }', { id: revoked.apiKey.id }, key);
  const unknownKey = `${key.slice(0, 12)}${'A'.repeat(key.length - 12)}`;
  // Submissions come from a second user: the first one's 20,000 images of today would be counted by
  // the images-per-day check (up to the limit, lifted here), which no real user reaches past the limit.
  const submitter = (await gql('mutation { signUp(email: "submitter@example.org") { secret } }')).signUp.secret;
  const submitterModel = (await gql('mutation($b: ID!) { createModel(input: { name: "m", kind: PRIVATE, baseModelId: $b }) { id } }', { b: baseModelId }, submitter)).createModel.id;

  const scenarios: { name: string; connections: number; query: string; variables?: object; key: string; expect: number }[] = [
    { name: '`{ me { id email } }`', connections: 50, query: '{ me { id email } }', key, expect: 200 },
    { name: '`{ me { id email } }`', connections: 200, query: '{ me { id email } }', key, expect: 200 },
    {
      name: `\`models\` with baseModel, versions, concepts (${ROWS} models)`,
      connections: 50,
      query: `{ models(first: ${ROWS}) { nodes { id name baseModel { id name } headVersion { id } versions { nodes { id number } } concepts { id token category } } } }`,
      key,
      expect: 200,
    },
    {
      name: `first ${ROWS} of ${JOBS.toLocaleString('en')} \`jobs\` with their images`,
      connections: 50,
      query: `{ jobs(first: ${ROWS}) { nodes { id status images { id url } } pageInfo { hasNextPage endCursor } } }`,
      key,
      expect: 200,
    },
    { name: 'unknown key (401)', connections: 50, query: '{ me { id } }', key: unknownKey, expect: 401 },
    { name: 'revoked key (401)', connections: 50, query: '{ me { id } }', key: revoked.secret, expect: 401 },
    { name: 'malformed key (401)', connections: 50, query: '{ me { id } }', key: 'not-a-key', expect: 401 },
    {
      name: '`generateImages` submission',
      connections: 50,
      query: 'mutation($m: ID!) { generateImages(input: { modelId: $m, prompt: "a dog", steps: 20 }) { id } }',
      variables: { m: submitterModel },
      key: submitter,
      expect: 200,
    },
  ];

  console.log(`\nAPI under load: ${DURATION} s per scenario, ${os.cpus().length} CPUs (${os.cpus()[0].model}), Node ${process.version}\n`);
  console.log('| request | connections | req/s | p50 | p99 | server CPU per request | database CPU per request | unexpected responses | server errors |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  const only = process.env.ONLY?.split(',');
  for (const scenario of scenarios.filter((s) => !only || only.some((word) => s.name.includes(word)))) {
    const [cpuBefore, databaseCpuBefore] = [await serverCpuMs(), await childrenCpuMs()];
    const result = await autocannon({
      url,
      method: 'POST',
      connections: scenario.connections,
      duration: DURATION,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${scenario.key}` },
      body: JSON.stringify({ query: scenario.query, variables: scenario.variables ?? {} }),
      // A 200 carrying GraphQL errors (a refusal) is not the answer measured.
      ...(scenario.expect === 200 ? { verifyBody: (body) => !String(body).includes('"errors"') } : {}),
    });
    const cpuPerRequest = ((await serverCpuMs()) - cpuBefore) / result.requests.total;
    const databaseCpuPerRequest = ((await childrenCpuMs()) - databaseCpuBefore) / result.requests.total;
    const errors = [...serverErrors.values()].reduce((sum, n) => sum + n, 0);
    if (errors) console.error([...serverErrors.keys()].join('\n'));
    serverErrors.clear();
    const unexpected = Object.entries(result.statusCodeStats ?? {})
      .filter(([status]) => Number(status) !== scenario.expect)
      .reduce((sum, [, stats]) => sum + (stats as { count: number }).count, 0) + result.errors + result.timeouts + result.mismatches;
    console.log(
      `| ${scenario.name} | ${scenario.connections} | ${Math.round(result.requests.average)} | ${result.latency.p50} ms | ${result.latency.p99} ms | ${cpuPerRequest.toFixed(2)} ms | ${databaseCpuPerRequest.toFixed(2)} ms | ${unexpected} | ${errors} |`,
    );
  }
} finally {
  const exited = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  await exited;
  await removeEmbeddedPostgres(path.join(dataDir, 'postgres'));
  await fs.rm(dataDir, { recursive: true, force: true });
}
