import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Config, S3Config } from '../config';
import { apiUrl, type RunningApi } from './server';

/** The program every API process runs (with ROLE=api). */
const MAIN = fileURLToPath(new URL('../main.ts', import.meta.url));
/** How long a stopping API process may take to finish its requests before it is killed. */
const STOP_TIMEOUT_MS = 20_000;
/** The wait before starting again an API process that failed to start, doubling up to the second bound. */
const MIN_RETRY_MS = 1_000;
const MAX_RETRY_MS = 30_000;

/**
 * The API served by `config.apiProcesses` processes on one port, for the cores one Node thread cannot use:
 * node:cluster starts this program that many times with ROLE=api, on the database and object store this
 * process started or was given, and hands each new connection to one of them in turn. Nothing else is
 * shared between them but PostgreSQL: key revocations reach each by NOTIFY, job events by its own LISTEN.
 * A process that dies is replaced. The other settings come from this process's environment (the request
 * limit per key, MAX_REQUESTS_PER_MINUTE_PER_KEY, counts in each process).
 */
export async function startApiProcesses(config: Config, backing: { databaseUrl: string; s3: S3Config }, log: Logger): Promise<RunningApi> {
  cluster.setupPrimary({ exec: MAIN, execArgv: process.execArgv });
  const env = {
    ROLE: 'api',
    API_PROCESSES: '1',
    PORT: String(config.port),
    HOST: config.host,
    DATABASE_URL: backing.databaseUrl,
    S3_ENDPOINT: backing.s3.endpoint,
    S3_BUCKET: backing.s3.bucket,
    S3_REGION: backing.s3.region,
    S3_ACCESS_KEY_ID: backing.s3.accessKeyId,
    S3_SECRET_ACCESS_KEY: backing.s3.secretAccessKey,
  };
  const running = new Set<Worker>();
  let stopping = false;

  /** One API process; resolves with its port once it listens, rejects if it exits first. */
  const start = (): Promise<number> =>
    new Promise<number>((listening, failed) => {
      const worker = cluster.fork(env);
      running.add(worker);
      let listened = false;
      worker.once('listening', (address) => {
        listened = true;
        listening(address.port);
      });
      worker.once('exit', (code, signal) => {
        running.delete(worker);
        if (!listened) return failed(new Error(`API process ${worker.process.pid} exited (${signal ?? code}) before it listened`));
        if (stopping) return;
        log.error({ pid: worker.process.pid, code, signal }, 'API process exited; starting another');
        replace(MIN_RETRY_MS);
      });
    });
  /** Another process for one that died; while they fail to start (the database away), again, less often. */
  const replace = (retryMs: number) => {
    if (stopping) return;
    start().catch((error) => {
      log.error({ err: error, retryInMs: retryMs }, 'API process failed to start');
      setTimeout(() => replace(Math.min(2 * retryMs, MAX_RETRY_MS)), retryMs).unref();
    });
  };
  const stop = async () => {
    stopping = true;
    await Promise.all([...running].map(stopProcess));
  };

  try {
    const [port] = await Promise.all(Array.from({ length: config.apiProcesses }, start));
    return { url: apiUrl(config.host, port), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** SIGTERM (the process stops as `npm start` does), then SIGKILL if it takes longer than it should. */
async function stopProcess(worker: Worker): Promise<void> {
  if (worker.process.exitCode !== null || worker.process.signalCode !== null) return;
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  worker.process.kill('SIGTERM');
  const timer = setTimeout(() => worker.process.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}
