import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallbackFirstClient, createDataSource, MAX_PREPARED_STATEMENTS } from '../../src/storage/database';
import { startTestPlatform, type TestPlatform } from './helpers';

/** The database pool's connections (src/storage/database.ts) behave as node-postgres's own, on both of its APIs. */
describe('the database client', () => {
  let platform: TestPlatform;

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('serves TypeORM through CallbackFirstClient, with node-postgres’s results, errors and stacks', async () => {
    const { db } = platform.services;
    const runner = db.createQueryRunner();
    try {
      const client = await runner.connect();
      expect(client).toBeInstanceOf(CallbackFirstClient);
      expect(await db.query('SELECT $1::int + 1 AS n, now() AS at', [41])).toEqual([{ n: 42, at: expect.any(Date) }]);

      const failure: any = await db.query('SELECT 1 / $1::int', [0]).catch((error: unknown) => error);
      expect(failure.driverError?.code ?? failure.code).toBe('22012'); // division_by_zero
      expect(String(failure.driverError?.stack ?? failure.stack)).toContain('database-client.test.ts');

      // The callback API and submittable queries pass through untouched.
      const viaCallback = await new Promise<unknown>((resolve, reject) => client.query('SELECT 7 AS n', (error: Error | null, result: { rows: unknown[] }) => (error ? reject(error) : resolve(result.rows))));
      expect(viaCallback).toEqual([{ n: 7 }]);
    } finally {
      await runner.release();
    }
  });

  it('prepares each statement with parameters once per connection, and forgets one that cannot run again', async () => {
    const runner = platform.services.db.createQueryRunner();
    try {
      await runner.connect();
      const prepared = async () =>
        ((await runner.query('SELECT statement FROM pg_prepared_statements')) as { statement: string }[]).map((row) => row.statement);
      const select = 'SELECT * FROM prepared_probe WHERE id = $1';
      await runner.query('CREATE TEMP TABLE prepared_probe (id int)');
      await runner.query('INSERT INTO prepared_probe VALUES ($1)', [1]);
      expect(await runner.query(select, [1])).toEqual([{ id: 1 }]);
      expect(await runner.query(select, [1])).toEqual([{ id: 1 }]);
      expect((await prepared()).filter((text) => text === select)).toHaveLength(1);
      // Texts without parameters keep the simple protocol (several statements in one text still run).
      expect(await prepared()).not.toContain('SELECT statement FROM pg_prepared_statements');

      // A statement that fails as it runs stays prepared.
      const divide = 'SELECT 1 / $1::int AS n';
      await expect(runner.query(divide, [0])).rejects.toMatchObject({ driverError: { code: '22012' } });
      expect(await runner.query(divide, [1])).toEqual([{ n: 1 }]);
      expect((await prepared()).filter((text) => text === divide)).toHaveLength(1);

      // Columns changed under `SELECT *` (a migration): PostgreSQL refuses the plan once, then the text is prepared anew.
      await runner.query('ALTER TABLE prepared_probe ADD COLUMN label text');
      await expect(runner.query(select, [1])).rejects.toMatchObject({ driverError: { code: '0A000' } });
      expect(await runner.query(select, [1])).toEqual([{ id: 1, label: null }]);

      // A text that failed to parse is parsed again next time (node-postgres alone would skip the parse).
      const later = 'SELECT id FROM later_probe WHERE id = $1';
      await expect(runner.query(later, [1])).rejects.toMatchObject({ driverError: { code: '42P01' } });
      await runner.query('CREATE TEMP TABLE later_probe (id int)');
      expect(await runner.query(later, [1])).toEqual([]);

      // Past the bound, texts run unprepared.
      for (let i = 0; i < MAX_PREPARED_STATEMENTS + 5; i++) expect(await runner.query(`SELECT $1::int + ${i} AS n`, [1])).toEqual([{ n: 1 + i }]);
      expect((await prepared()).length).toBeLessThanOrEqual(MAX_PREPARED_STATEMENTS);
    } finally {
      await runner.release();
    }
  });

  it('prepares nothing with DATABASE_PREPARED_STATEMENTS=false', async () => {
    const db = await createDataSource(platform.databaseUrl, { preparedStatements: false }).initialize();
    const runner = db.createQueryRunner();
    try {
      await runner.connect();
      expect(await runner.query('SELECT $1::int + 1 AS n', [1])).toEqual([{ n: 2 }]);
      expect(await runner.query('SELECT $1::int + 1 AS n', [2])).toEqual([{ n: 3 }]);
      expect(await runner.query('SELECT count(*)::int AS n FROM pg_prepared_statements')).toEqual([{ n: 0 }]);
    } finally {
      await runner.release();
      await db.destroy();
    }
  });
});
