import pg from 'pg';
import type { Logger } from 'pino';
import { DataSource } from 'typeorm';
import { entities } from '../entities';
import { migrations } from '../../migrations';

/** Any number for pg_advisory_lock, constant across processes: "bigdiffusion migrations". */
const MIGRATION_LOCK = 0x6264_6d67;

const baseQuery = pg.Client.prototype.query as (this: pg.Client, ...args: unknown[]) => unknown;

/**
 * node-postgres's promise API (`client.query(text, values)`, what TypeORM calls) makes the query, then stores
 * the callback that resolves its promise into it. V8 then keeps each result alive through young-generation
 * collections, to be promoted and die in the old generation; plain JavaScript does the same when a closure is
 * stored into an object after the object is made (bench/RESULTS.md). This client's promise API hands the query
 * its callback as it is made, and otherwise is node-postgres's own, error stacks included.
 */
export class CallbackFirstClient extends pg.Client {
  override query(config: unknown, values?: unknown, callback?: unknown): any {
    if (typeof (config as { submit?: unknown } | null)?.submit === 'function' || typeof values === 'function' || typeof callback === 'function') {
      return baseQuery.call(this, config, values, callback);
    }
    return new Promise((resolve, reject) => baseQuery.call(this, config, values, (error: Error | null, result: unknown) => (error ? reject(error) : resolve(result)))).catch(
      (error: Error) => {
        // As node-postgres does: a stack that leads back to the caller, not to the socket's read.
        Error.captureStackTrace(error);
        throw error;
      },
    );
  }
}

/** A DataSource for our schema. The schema comes only from migrations, never from `synchronize`. */
export function createDataSource(url: string): DataSource {
  return new DataSource({
    type: 'postgres',
    url,
    entities,
    migrations,
    synchronize: false,
    migrationsRun: false,
    logging: false,
    // `extra` goes to pg's Pool: its connections are CallbackFirstClients.
    extra: { max: 10, Client: CallbackFirstClient },
  });
}

/** Connects and applies pending migrations; concurrent starters wait on a lock so only one migrates. */
export async function openDatabase(url: string, log: Logger): Promise<DataSource> {
  const dataSource = await createDataSource(url).initialize();
  const runner = dataSource.createQueryRunner();
  try {
    await runner.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    const applied = await dataSource.runMigrations({ transaction: 'all' });
    if (applied.length) log.info({ migrations: applied.map((m) => m.name) }, 'migrations applied');
  } finally {
    await runner.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
    await runner.release();
  }
  return dataSource;
}
