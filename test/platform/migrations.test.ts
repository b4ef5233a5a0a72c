import path from 'node:path';
import { pino } from 'pino';
import type { DataSource } from 'typeorm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/storage/database';
import { startEmbeddedPostgres, type RunningPostgres } from '../../src/storage/embedded-postgres';
import { tempDir } from './helpers';

describe('migrations', () => {
  let data: Awaited<ReturnType<typeof tempDir>>;
  let postgres: RunningPostgres;
  let db: DataSource;

  beforeAll(async () => {
    data = await tempDir('bd-migrations-');
    postgres = await startEmbeddedPostgres(path.join(data.dir, 'postgres'), pino({ level: 'silent' }));
    db = await openDatabase(postgres.url, pino({ level: 'silent' }));
  });
  afterAll(async () => {
    await db?.destroy();
    await postgres?.stop();
    await data?.remove();
  });

  it('bring an empty database exactly to the entities (else: npm run migration:generate -- Name)', async () => {
    const pending = await db.driver.createSchemaBuilder().log();
    expect(pending.upQueries.map((q) => q.query)).toEqual([]);
  });

  it('can be undone and applied again', async () => {
    const count = db.migrations.length;
    for (let i = 0; i < count; i++) await db.undoLastMigration({ transaction: 'all' });
    const tables: { table_name: string }[] = await db.query(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> 'migrations'",
    );
    expect(tables).toEqual([]);
    expect(await db.runMigrations({ transaction: 'all' })).toHaveLength(count);
  });

  it('are applied once even when several processes start together', async () => {
    for (let i = 0; i < db.migrations.length; i++) await db.undoLastMigration({ transaction: 'all' });
    const others = await Promise.all([1, 2, 3].map(() => openDatabase(postgres.url, pino({ level: 'silent' }))));
    await Promise.all(others.map((o) => o.destroy()));
    const applied: unknown[] = await db.query('SELECT * FROM migrations');
    expect(applied).toHaveLength(db.migrations.length);
  });
});
