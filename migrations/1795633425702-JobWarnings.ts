import type { MigrationInterface, QueryRunner } from 'typeorm';

export class JobWarnings1795633425702 implements MigrationInterface {
  name = 'JobWarnings1795633425702';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TABLE \"job\" ADD \"warnings\" text array NOT NULL DEFAULT '{}'");
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TABLE \"job\" DROP COLUMN \"warnings\"");
  }
}
