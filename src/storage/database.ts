import pg from 'pg';
import type { Logger } from 'pino';
import { DataSource } from 'typeorm';
import { entities } from '../entities';
import { migrations } from '../../migrations';
import { parseTimestamptz } from './timestamps';

/** Any number for pg_advisory_lock, constant across processes: "bigdiffusion migrations". */
const MIGRATION_LOCK = 0x6264_6d67;

const baseQuery = pg.Client.prototype.query as (this: pg.Client, ...args: unknown[]) => unknown;

/** Statements one connection prepares at most: PostgreSQL keeps each one's plan for the connection's life. */
export const MAX_PREPARED_STATEMENTS = 200;
/** SQLSTATEs of a prepared statement that cannot run again: its result's columns changed (0A000), it is gone (26000). */
const STATEMENT_UNUSABLE = new Set(['0A000', '26000']);

/**
 * The pool's connections. Three things differ from node-postgres's own client:
 *
 * - Statements with parameters (everything TypeORM and our services send, as `query(text, values)`) are
 *   prepared once per connection and then only bound and executed: PostgreSQL parses and plans each
 *   text once, not per request, which was about half of its CPU time on a list's short queries
 *   (bench/RESULTS.md). At most MAX_PREPARED_STATEMENTS per connection; later texts run unprepared.
 *   A prepared statement that fails (its table's columns changed under a `SELECT *` by a migration of a
 *   newer release) is forgotten, and its text runs unprepared the next time, then prepared anew.
 *   Texts without parameters (migrations, several statements in one) keep the simple protocol.
 * - The promise API hands the query its callback as it is made. node-postgres's makes the query, then
 *   stores the callback that resolves its promise into it, and V8 then keeps each result alive through
 *   young-generation collections, to be promoted and die in the old generation; plain JavaScript does
 *   the same when a closure is stored into an object after the object is made (bench/RESULTS.md).
 * - Timestamps are read without regular expressions where they can be (timestamps.ts).
 */
export class CallbackFirstClient extends pg.Client {
  /** Text -> the name it is prepared under on this connection. */
  readonly #prepared = new Map<string, string>();
  #named = 0;
  readonly #prepares: boolean;

  constructor(config?: string | (pg.ClientConfig & DatabaseOptions)) {
    super(config);
    this.setTypeParser(pg.types.builtins.TIMESTAMPTZ, parseTimestamptz);
    this.#prepares = typeof config !== 'object' || config.preparedStatements !== false;
  }

  override query(config: unknown, values?: unknown, callback?: unknown): any {
    if (typeof (config as { submit?: unknown } | null)?.submit === 'function' || typeof values === 'function' || typeof callback === 'function') {
      return baseQuery.call(this, config, values, callback);
    }
    const name = this.#prepares && typeof config === 'string' && Array.isArray(values) && values.length > 0 ? this.#nameOf(config) : undefined;
    const query = name ? { name, text: config, values } : config;
    return new Promise((resolve, reject) => baseQuery.call(this, query, name ? undefined : values, (error: Error | null, result: unknown) => (error ? reject(error) : resolve(result)))).catch(
      (error: Error) => {
        if (name) this.#forgetIfBroken(config as string, name, error);
        // As node-postgres does: a stack that leads back to the caller, not to the socket's read.
        Error.captureStackTrace(error);
        throw error;
      },
    );
  }

  #nameOf(text: string): string | undefined {
    let name = this.#prepared.get(text);
    if (name === undefined && this.#named < MAX_PREPARED_STATEMENTS) {
      name = `bd_${this.#named++}`;
      this.#prepared.set(text, name);
    }
    return name;
  }

  /**
   * Forgets a statement that failed to parse (node-postgres remembers the name it sent even then, and would
   * skip the parse next time) or whose plan cannot serve any more; a statement that failed as it ran stays.
   */
  #forgetIfBroken(text: string, name: string, error: Error): void {
    const connection = (this as unknown as { connection: { parsedStatements: Record<string, string>; submittedNamedStatements: Record<string, string> } }).connection;
    const code = (error as { code?: string }).code;
    if (connection.parsedStatements[name] !== undefined && !STATEMENT_UNUSABLE.has(code ?? '')) return;
    this.#prepared.delete(text);
    delete connection.parsedStatements[name];
    delete connection.submittedNamedStatements[name];
  }
}

export interface DatabaseOptions {
  /** Prepare statements with parameters once per connection (default); false behind a pooler that cannot keep them. */
  preparedStatements?: boolean;
}

/** A DataSource for our schema. The schema comes only from migrations, never from `synchronize`. */
export function createDataSource(url: string, { preparedStatements = true }: DatabaseOptions = {}): DataSource {
  return new DataSource({
    type: 'postgres',
    url,
    entities,
    migrations,
    synchronize: false,
    migrationsRun: false,
    logging: false,
    // `extra` goes to pg's Pool, and from it to each of its connections, CallbackFirstClients.
    extra: { max: 10, Client: CallbackFirstClient, preparedStatements },
  });
}

/** Connects and applies pending migrations; concurrent starters wait on a lock so only one migrates. */
export async function openDatabase(url: string, log: Logger, options: DatabaseOptions = {}): Promise<DataSource> {
  const dataSource = await createDataSource(url, options).initialize();
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
