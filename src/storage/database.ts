import type { Logger } from 'pino';
import { DataSource } from 'typeorm';
import { entities } from '../entities';
import { migrations } from '../../migrations';

/** Any number for pg_advisory_lock, constant across processes: "bigdiffusion migrations". */
const MIGRATION_LOCK = 0x6264_6d67;

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
    extra: { max: 10 },
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
