import type { MigrationInterface, QueryRunner } from 'typeorm';

export class DefaultBaseModel1796576092765 implements MigrationInterface {
  name = 'DefaultBaseModel1796576092765';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TABLE \"base_model\" ADD \"isDefault\" boolean NOT NULL DEFAULT false");
    // Existing installations: the first base model registered (the bundled one, where the platform made it) stays the default.
    await runner.query('UPDATE "base_model" SET "isDefault" = true WHERE "id" = (SELECT "id" FROM "base_model" ORDER BY "createdAt" LIMIT 1)');
    await runner.query("CREATE UNIQUE INDEX \"base_model_one_default\" ON \"base_model\" (\"isDefault\") WHERE \"isDefault\"");
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query("DROP INDEX \"public\".\"base_model_one_default\"");
    await runner.query("ALTER TABLE \"base_model\" DROP COLUMN \"isDefault\"");
  }
}
