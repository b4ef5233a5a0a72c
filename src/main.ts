// Composition root: config -> services (database, object store, queue) -> API and/or worker.
import 'reflect-metadata';
import cluster from 'node:cluster';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino, type Logger } from 'pino';
import { ConfigError, loadConfig, type Config, type S3Config } from './config';
import { KeyCache } from './services/api-keys';
import { JobAdmissions } from './services/job-admissions';
import { JobEvents } from './services/job-events';
import { WebhookDispatcher } from './services/webhook-delivery';
import { PgBossQueue } from './storage/job-queue';
import { startWorker } from './worker/worker';
import { startApiServer } from './api/server';
import { startApiProcesses } from './api/processes';
import { ensureBundledBaseModel } from './services/base-models';
import type { Services } from './services/container';
import { buildAppSchema } from './api/schema';
import { openDatabase } from './storage/database';
import { startEmbeddedPostgres } from './storage/embedded-postgres';
import { startEmbeddedS3 } from './storage/embedded-s3';
import { ObjectStore } from './storage/object-store';

export interface RunningPlatform {
  /** The GraphQL endpoint (HTTP; the same URL with ws:// for WebSocket); null for ROLE=worker. */
  url: string | null;
  services: Services;
  /** Where the database and object store are, embedded or not: a second process can share them. */
  databaseUrl: string;
  s3: S3Config;
  /** Stops everything this call started, in reverse order. */
  stop(): Promise<void>;
}

/**
 * Starts the platform in this process: embedded PostgreSQL and S3 unless the config names external
 * ones, migrations, the job queue, and the API unless ROLE=worker. On failure, whatever already
 * started is stopped before the error propagates.
 */
export async function startPlatform(config: Config, log: Logger = pino({ level: config.logLevel })): Promise<RunningPlatform> {
  const stack: (() => Promise<void> | void)[] = [];
  const stop = async () => {
    for (const step of stack.splice(0).reverse()) {
      await Promise.resolve()
        .then(step)
        .catch((error) => log.error({ err: error }, 'error while stopping'));
    }
  };
  try {
    let databaseUrl = config.databaseUrl;
    if (!databaseUrl) {
      const postgres = await startEmbeddedPostgres(path.join(config.dataDir, 'postgres'), log);
      stack.push(() => postgres.stop());
      databaseUrl = postgres.url;
    }
    let s3 = config.s3;
    if (!s3) {
      const embedded = await startEmbeddedS3(path.join(config.dataDir, 's3'), config.s3Bucket, log);
      stack.push(() => embedded.stop());
      s3 = embedded.config;
    }

    const db = await openDatabase(databaseUrl, log, { preparedStatements: config.preparedStatements });
    stack.push(() => db.destroy());
    const store = new ObjectStore(s3);
    stack.push(() => store.close());
    await store.ensureBucket();
    const queue = await PgBossQueue.start(databaseUrl, log);
    stack.push(() => queue.stop());
    const events = new JobEvents(databaseUrl, log);
    stack.push(() => events.close());
    const keys = new KeyCache(db, databaseUrl, log);
    stack.push(() => keys.close());
    const webhooks = new WebhookDispatcher(databaseUrl, log, config.webhooks);
    webhooks.start();
    stack.push(() => webhooks.stop());
    const admissions = new JobAdmissions({ db, queue, limits: config.jobLimits });
    const services: Services = { config, log, db, store, queue, events, keys, admissions };
    await ensureBundledBaseModel(db, store, config.bundledBaseModel);

    let url: string | null = null;
    if (config.role !== 'worker') {
      const api =
        config.apiProcesses > 1
          ? await startApiProcesses(config, { databaseUrl, s3 }, log)
          : await startApiServer(services, await buildAppSchema());
      stack.push(() => api.stop());
      url = api.url;
    }
    if (config.role !== 'api') {
      const worker = await startWorker(services);
      stack.push(() => worker.stop());
    }
    return { url, services, databaseUrl, s3, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(error.message);
    process.exit(1);
  }
  const log = pino({ level: config.logLevel });
  const platform = await startPlatform(config, log);
  log.info({ role: config.role, url: platform.url }, 'platform started');

  let stoppingSince: number | undefined;
  const shutdown = (signal: string) => {
    // tsx relays the signal it receives, so one Ctrl-C or kill can arrive twice at once; only a signal
    // well after the first means the user gave up waiting (and leaves the embedded cluster running).
    if (stoppingSince !== undefined) {
      if (Date.now() - stoppingSince > 3000) process.exit(1);
      return;
    }
    stoppingSince = Date.now();
    log.info({ signal }, 'shutting down');
    platform.stop().then(
      () => process.exit(0),
      (error) => {
        log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // Ours stop the API and queue first, then the cluster, so they replace any installed before (tsx's,
  // when started through its CLI). An API process of several (api/processes.ts) stops when the process
  // that started it says so: a Ctrl-C reaches every process of the terminal's group at once.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.removeAllListeners(signal);
    process.on(signal, cluster.isWorker && signal === 'SIGINT' ? () => {} : () => shutdown(signal));
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
