import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { embeddedPostgresUrl } from '../../src/storage/embedded-postgres';
import { gql, signUp, startTestPlatform, tempDir } from './helpers';
import { alive, ServerProcess } from './server-process';

describe('server lifecycle', () => {
  let data: Awaited<ReturnType<typeof tempDir>>;
  const started: ServerProcess[] = [];
  const launch = (dir: string) => {
    const server = new ServerProcess({ DATA_DIR: dir });
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
