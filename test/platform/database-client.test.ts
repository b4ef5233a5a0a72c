import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { CallbackFirstClient, createDataSource, MAX_PREPARED_STATEMENTS } from '../../src/storage/database';
import { parseTimestamptz } from '../../src/storage/timestamps';
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

  it('reads timestamps as node-postgres does, in any time zone', async () => {
    const runner = platform.services.db.createQueryRunner();
    const parseAny = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ);
    const instants = [
      '2026-12-07 14:09:01.123456+00', '2026-12-07 14:09:01+00', '2026-02-28 23:59:59.9+00', '1999-12-31 23:59:59.999999+00',
      '0050-06-01 12:00:00+00', '0099-01-01 00:00:00.5+00', '0100-01-01 00:00:00+00', '12026-01-01 00:00:00+00',
      '0044-03-15 12:00:00+00 BC', 'infinity', '-infinity',
    ];
    try {
      for (const zone of ['UTC', 'Asia/Kolkata', 'America/St_Johns']) {
        await runner.query(`SET TimeZone = '${zone}'`);
        const rows: { at: Date | number; text: string }[] = await runner.query('SELECT at, at::text AS text FROM unnest($1::timestamptz[]) AS at', [instants]);
        expect(rows).toHaveLength(instants.length);
        for (const { at, text } of rows) expect({ text, at }).toEqual({ text, at: parseAny(text) });
      }
      // Instants from 1970 to 2100, with every length of fraction a UTC session writes.
      for (let time = 0; time < Date.UTC(2100, 0, 1); time += 987_654_321) {
        for (const micros of ['', '.1', '.12', '.123', '.1234', '.12345', '.123456']) {
          const text = new Date(time).toISOString().slice(0, 19).replace('T', ' ') + micros + '+00';
          expect(parseTimestamptz(text)).toEqual(parseAny(text));
        }
      }
    } finally {
      await runner.query('RESET TimeZone');
      await runner.release();
    }
  });
});
