import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallbackFirstClient } from '../../src/storage/database';
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
});
