import type { MigrationInterface, QueryRunner } from 'typeorm';

export class JobRetries1796576335600 implements MigrationInterface {
  name = 'JobRetries1796576335600';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TABLE \"job\" ADD \"retries\" integer NOT NULL DEFAULT '0'");
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TABLE \"job\" DROP COLUMN \"retries\"");
  }
}
