import { EventEmitter, on } from 'node:events';
import pg from 'pg';
import type { Logger } from 'pino';
import type { DataSource, EntityManager } from 'typeorm';

/** The PostgreSQL channel every job change is announced on. */
const CHANNEL = 'job_events';

/** What changed: the row's status, its progress, or its images. Listeners re-read the row. */
export type JobEventKind = 'status' | 'progress' | 'images';

/**
 * Announces a change of Job `jobId` to every API process. The payload stays tiny (NOTIFY's limit is
 * 8000 bytes); inside a transaction it is delivered only on commit, so listeners read committed rows.
 */
export async function publishJobEvent(db: DataSource | EntityManager, jobId: string, kind: JobEventKind): Promise<void> {
  await db.query('SELECT pg_notify($1, $2)', [CHANNEL, JSON.stringify({ id: jobId, kind })]);
}

const RECONNECT_DELAY_MS = 1000;

/**
 * Job events of the whole cluster for this process's subscribers: one LISTEN connection, opened on
 * the first subscription (processes that never serve one, like workers, never open it), fanned out by
 * job id. After a lost connection it reconnects and nudges every subscriber, which re-reads its job,
 * so nothing missed in between stays missed.
 */
export class JobEvents {
  readonly #emitter = new EventEmitter();
  #client: Promise<pg.Client> | null = null;
  #connected: pg.Client | null = null;
  #closed = false;

  constructor(
    private readonly databaseUrl: string,
    private readonly log: Logger,
  ) {
    this.#emitter.setMaxListeners(0);
  }

  /**
   * Changes of one job, as they come, until `signal` aborts. Listening starts before this resolves,
   * so a caller that reads the job afterwards misses nothing.
   */
  async changes(jobId: string, signal: AbortSignal): Promise<AsyncIterator<unknown>> {
    const iterator = on(this.#emitter, jobId, { signal });
    try {
      await this.#listen();
    } catch (error) {
      await iterator.return?.();
      throw error;
    }
    return iterator;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const client = this.#client;
    this.#client = null;
    if (client) await (await client.catch(() => null))?.end();
  }

  #listen(): Promise<pg.Client> {
    if (this.#closed) return Promise.reject(new Error('job events are closed'));
    this.#client ??= this.#connect().catch((error) => {
      this.#client = null;
      throw error;
    });
    return this.#client;
  }

  async #connect(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: this.databaseUrl });
    client.on('notification', ({ payload }) => {
      try {
        const { id } = JSON.parse(payload ?? '') as { id: string };
        this.#emitter.emit(id, payload);
      } catch (error) {
        this.log.warn({ err: error, payload }, 'ignoring a malformed job event');
      }
    });
    client.on('error', (error) => {
      this.log.error({ err: error }, 'job event connection lost');
      void client.end().catch(() => {});
      if (this.#closed || client !== this.#connected) return;
      this.#connected = null;
      this.#client = null;
      setTimeout(() => this.#reconnect(), RECONNECT_DELAY_MS).unref();
    });
    await client.connect();
    await client.query(`LISTEN ${CHANNEL}`);
    this.#connected = client;
    return client;
  }

  #reconnect(): void {
    if (this.#closed || this.#emitter.eventNames().length === 0) return;
    this.#listen().then(
      () => {
        for (const id of this.#emitter.eventNames()) this.#emitter.emit(id, 'reconnected');
      },
      () => setTimeout(() => this.#reconnect(), RECONNECT_DELAY_MS).unref(),
    );
  }
}
