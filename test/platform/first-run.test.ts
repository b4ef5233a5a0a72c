import { execFile } from 'node:child_process';
import { realpathSync, statSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeEmbeddedPostgres, startEmbeddedPostgres } from '../../src/storage/embedded-postgres';
import { ROOT_HOME } from '../../src/storage/postgres-as-root';
import { gql, signUp } from './helpers';
import { alive, ServerProcess } from './server-process';

const run = promisify(execFile);
const silent = pino({ level: 'silent' });
const ROOT = path.resolve(import.meta.dirname, '../..');
const NODE_MODULES = realpathSync(path.join(ROOT, 'node_modules'));

// The checkout is copied as hard links, which cannot cross file systems.
const asRoot = process.getuid?.() === 0;
const linkable = statSync(os.tmpdir()).dev === statSync(NODE_MODULES).dev;
if (!asRoot) console.warn('[first-run] not running as root: the first run from a folder only root can enter is not tested (CI runs as root)');
else if (!linkable) console.warn(`[first-run] ${os.tmpdir()} and ${NODE_MODULES} lie on different file systems: the first run from a folder only root can enter is not tested`);

/**
 * A checkout where the usual container or VM puts one: in a folder only root can enter (here mkdtemp's
 * 0700 folder, like /root). As root, PostgreSQL runs as the postgres user, who cannot enter it.
 */
describe.skipIf(!asRoot || !linkable)('first run as root from a folder only root can enter', () => {
  let closed: string;
  let app: string;
  let tmpMode: number;
  const started: ServerProcess[] = [];
  const launch = () => {
    const server = new ServerProcess({}, app); // DATA_DIR defaults to ./data, inside the closed folder
    started.push(server);
    return server;
  };
  const clusterHome = async () => path.dirname(await fs.readlink(path.join(app, 'data', 'postgres')));

  beforeAll(async () => {
    tmpMode = statSync(os.tmpdir()).mode;
    closed = await fs.mkdtemp(path.join(os.tmpdir(), 'bd-closed-'));
    app = path.join(closed, 'app');
    await fs.mkdir(app);
    // The project's files and node_modules (PostgreSQL's binaries among them), not the local data or caches.
    for (const entry of await fs.readdir(ROOT)) {
      if (entry.startsWith('.') || ['node_modules', 'data', 'dist'].includes(entry)) continue;
      await run('cp', ['-al', path.join(ROOT, entry), app]);
    }
    await run('cp', ['-al', NODE_MODULES, path.join(app, 'node_modules')]);
  }, 300_000);

  afterAll(async () => {
    started.forEach((s) => s.kill());
    if (app) await removeEmbeddedPostgres(path.join(app, 'data', 'postgres'));
    if (closed) await fs.rm(closed, { recursive: true, force: true });
  });

  it('npm start serves, stops on Ctrl-C and restarts on its data, changing no folder it does not own', async () => {
    expect(statSync(closed).mode & 0o777).toBe(0o700);
    const first = launch();
    const { url } = await first.logged('platform started');
    const { key } = await signUp(url, 'root@first-run.example.org');
    const postgresPid = Number((await fs.readFile(path.join(app, 'data', 'postgres', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    expect(await first.interrupt()).toBe(0);
    expect(alive(postgresPid)).toBe(false);

    // The cluster lives in the platform's own folder, the data folder links to it; the closed folder stayed closed.
    expect(path.dirname(await clusterHome())).toBe(path.join(ROOT_HOME, 'clusters'));
    expect(statSync(closed).mode & 0o777).toBe(0o700);
    expect(statSync(os.tmpdir()).mode).toBe(tmpMode);

    const restarted = launch();
    const { url: url2 } = await restarted.logged('platform started');
    expect((await gql(url2, '{ me { email } }', {}, key)).data?.me.email).toBe('root@first-run.example.org');
    expect(await restarted.interrupt()).toBe(0);
  });

  it('stops with one line that says why and what to do when an existing cluster is out of the postgres user\'s reach', async () => {
    const open = await fs.mkdtemp(path.join(os.tmpdir(), 'bd-open-'));
    try {
      await fs.chmod(open, 0o755);
      const cluster = path.join(open, 'postgres');
      await (await startEmbeddedPostgres(cluster, silent)).stop();
      await fs.chmod(open, 0o700);
      const error = await startEmbeddedPostgres(cluster, silent).catch((e: Error) => e);
      expect(error).toBeInstanceOf(Error);
      expect((error as Error).message).toBe(
        `PostgreSQL runs as the OS user "postgres" when the platform runs as root, and cannot enter ${open} on the way to the cluster in ${cluster}: move the cluster where that user can reach it, or run the platform as another user`,
      );
      expect(statSync(open).mode & 0o777).toBe(0o700);
    } finally {
      await fs.rm(open, { recursive: true, force: true });
    }
  });

  it('runs the platform tests, through the test helpers, from that checkout', async () => {
    // vitest's own variables would make the inner run think it is one of our workers; colours would hide the count.
    const env = { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(VITEST|FORCE_COLOR)/.test(name))), NO_COLOR: '1' };
    const { stdout } = await run(process.execPath, [path.join('node_modules', 'vitest', 'vitest.mjs'), 'run', 'test/platform/job-limits.test.ts'], { cwd: app, env });
    expect(stdout).toMatch(/Tests\s+\S*\d+ passed/);
    expect(statSync(closed).mode & 0o777).toBe(0o700);
  });
});
