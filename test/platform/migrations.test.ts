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

  it('keep model versions immutable', async () => {
    const [base] = await db.query(`INSERT INTO base_model (name, "storageLocation", architecture) VALUES ('b', 'k', 'sd15') RETURNING id`);
    const [model] = await db.query(`INSERT INTO model (name, kind, "baseModelId") VALUES ('m', 'META', $1) RETURNING id`, [base.id]);
    const [version] = await db.query(`INSERT INTO model_version ("modelId", number, "weightsKey", method) VALUES ($1, 1, 'w/1', 'LORA') RETURNING id`, [model.id]);
    await expect(db.query(`UPDATE model_version SET "weightsKey" = 'w/evil' WHERE id = $1`, [version.id])).rejects.toThrow('immutable');
    await expect(db.query(`UPDATE model_version SET method = 'FULL' WHERE id = $1`, [version.id])).rejects.toThrow('immutable');
    // Except that a version outlives the contribution that made it.
    const [user] = await db.query(`INSERT INTO "user" (email) VALUES ('c@example.org') RETURNING id`);
    const [concept] = await db.query(`INSERT INTO concept (token, category, kind, "modelId", "contributorId") VALUES ('sks', 'dog', 'OBJECT', $1, $2) RETURNING id`, [model.id, user.id]);
    const [contribution] = await db.query(`INSERT INTO contribution ("userId", "modelId", "conceptId") VALUES ($1, $2, $3) RETURNING id`, [user.id, model.id, concept.id]);
    const [made] = await db.query(`INSERT INTO model_version ("modelId", number, "weightsKey", method, "parentVersionId", "contributionId") VALUES ($1, 2, 'w/2', 'LORA', $2, $3) RETURNING id`, [model.id, version.id, contribution.id]);
    await expect(db.query(`UPDATE model_version SET "contributionId" = $2 WHERE id = $1`, [version.id, contribution.id])).rejects.toThrow('immutable');
    await db.query('DELETE FROM "user" WHERE id = $1', [user.id]);
    expect(await db.query('SELECT "contributionId" FROM model_version WHERE id = $1', [made.id])).toEqual([{ contributionId: null }]);
    // Deleting the model still takes its versions.
    await db.query('DELETE FROM model WHERE id = $1', [model.id]);
    expect(await db.query('SELECT id FROM model_version WHERE id = $1', [version.id])).toEqual([]);
    await db.query('DELETE FROM base_model WHERE id = $1', [base.id]);
  });

  it('can be undone and applied again', async () => {
    const count = db.migrations.length;
    for (let i = 0; i < count; i++) await db.undoLastMigration({ transaction: 'all' });
    const tables: { table_name: string }[] = await db.query(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> 'migrations'",
    );
    expect(tables).toEqual([]);
    expect(await db.query("SELECT proname FROM pg_proc WHERE proname = 'model_version_immutable'")).toEqual([]);
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
