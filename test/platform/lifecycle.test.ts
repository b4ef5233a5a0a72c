import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { embeddedPostgresUrl } from '../../src/storage/embedded-postgres';
import { gql, signUp, startTestPlatform, tempDir } from './helpers';
import { alive, childrenOf, ServerProcess } from './server-process';

describe('server lifecycle', () => {
  let data: Awaited<ReturnType<typeof tempDir>>;
  const started: ServerProcess[] = [];
  const launch = (dir: string, env: Record<string, string> = {}) => {
    const server = new ServerProcess({ DATA_DIR: dir, ...env });
    started.push(server);
    return server;
  };

  beforeAll(async () => {
    data = await tempDir('bd-lifecycle-');
  });
  afterAll(async () => {
    started.forEach((s) => s.kill());
    await data?.remove();
  });

  it('serves from two processes on one database, stops cleanly on Ctrl-C and restarts on its data', async () => {
    const first = launch(data.dir);
    const { url } = await first.logged('platform started');
    const postgresPort: number = (await first.logged('embedded PostgreSQL started')).port;
    const s3Port: number = (await first.logged('embedded S3 started')).port;
    const pidFile = path.join(data.dir, 'postgres', 'postmaster.pid');
    const postgresPid = Number((await fs.readFile(pidFile, 'utf8')).split('\n')[0]);
    expect(alive(postgresPid)).toBe(true);

    // A second process against the same PostgreSQL and S3: each sees what the other wrote.
    const second = await startTestPlatform({
      DATABASE_URL: embeddedPostgresUrl(postgresPort),
      S3_ENDPOINT: `http://127.0.0.1:${s3Port}`,
      S3_ACCESS_KEY_ID: 'S3RVER',
      S3_SECRET_ACCESS_KEY: 'S3RVER',
    });
    let key: string;
    try {
      key = (await signUp(url, 'first@example.org')).key;
      const other = (await signUp(second.url, 'second@example.org')).key;
      expect((await gql(second.url, '{ me { email } }', {}, key)).data?.me.email).toBe('first@example.org');
      expect((await gql(url, '{ me { email } }', {}, other)).data?.me.email).toBe('second@example.org');
    } finally {
      await second.stop();
    }

    expect(await first.interrupt()).toBe(0);
    expect(alive(postgresPid)).toBe(false);
    await expect(fs.access(pidFile)).rejects.toThrow();

    const restarted = launch(data.dir);
    const { url: url2 } = await restarted.logged('platform started');
    expect((await gql(url2, '{ me { email } }', {}, key)).data?.me.email).toBe('first@example.org');
    expect(await restarted.interrupt()).toBe(0);
  });

  it('serves from several API processes on one port, each told of a revocation, and stops them all', async () => {
    const dir = path.join(data.dir, 'processes');
    const server = launch(dir, { API_PROCESSES: '2' });
    const { url } = await server.logged('platform started', (line) => line.role === 'all');
    const apiProcesses = await vi.waitFor(() => {
      const pids = [...new Set(server.loggedSoFar('GraphQL API listening').map((line) => line.pid as number))];
      expect(pids).toHaveLength(2);
      return pids;
    });
    expect(await childrenOf(server.pid)).toEqual(expect.arrayContaining(apiProcesses));

    // Each new connection goes to the next process: four requests reach both, and both remember the key.
    const { key } = await signUp(url, 'processes@example.org');
    const spare = (await gql(url, 'mutation { createApiKey(name: "spare") { secret apiKey { id } } }', {}, key)).data!.createApiKey;
    const meOnNewConnections = () => Promise.all([1, 2, 3, 4].map(() => postOnNewConnection(url, '{ me { email } }', {}, spare.secret)));
    for (const answer of await meOnNewConnections()) expect(answer.body.data?.me.email).toBe('processes@example.org');
    expect((await gql(url, 'mutation($id: ID!) { revokeApiKey(id: $id) { revoked } }', { id: spare.apiKey.id }, key)).data?.revokeApiKey.revoked).toBe(true);
    await vi.waitFor(async () => expect((await meOnNewConnections()).map((answer) => answer.status)).toEqual([401, 401, 401, 401]), { timeout: 5000 });

    // One that dies is replaced; the API keeps answering.
    process.kill(apiProcesses[0], 'SIGKILL');
    await server.logged('API process exited; starting another');
    await server.logged('platform started', (line) => line.role === 'api' && !apiProcesses.includes(line.pid));
    expect((await postOnNewConnection(url, '{ __typename }')).body.data).toEqual({ __typename: 'Query' });

    // What a process manager sends: every process stops, the embedded PostgreSQL too.
    const postgresPid = Number((await fs.readFile(path.join(dir, 'postgres', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    const all = [...(await childrenOf(server.pid)), postgresPid];
    expect(await server.interrupt('SIGTERM')).toBe(0);
    expect(all.filter(alive)).toEqual([]);
  });

  it('runs as a worker without the API (ROLE=worker)', async () => {
    const api = await startTestPlatform();
    try {
      const worker = await startTestPlatform({
        ROLE: 'worker',
        DATABASE_URL: api.databaseUrl,
        S3_ENDPOINT: api.s3.endpoint,
        S3_ACCESS_KEY_ID: api.s3.accessKeyId,
        S3_SECRET_ACCESS_KEY: api.s3.secretAccessKey,
      });
      expect(worker.url).toBeNull();
      await worker.stop();
    } finally {
      await api.stop();
    }
  });
});

/** A GraphQL POST on a connection of its own (fetch would reuse one): the answer's status and body. */
function postOnNewConnection(url: string, query: string, variables: Record<string, unknown> = {}, key?: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    });
    request.on('error', reject).on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk)).on('error', reject);
      response.on('end', () => resolve({ status: response.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString()) }));
    });
    request.end(JSON.stringify({ query, variables }));
  });
}
