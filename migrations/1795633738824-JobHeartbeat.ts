import type { MigrationInterface, QueryRunner } from 'typeorm';

export class JobHeartbeat1795633738824 implements MigrationInterface {
  name = 'JobHeartbeat1795633738824';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TABLE \"job\" ADD \"heartbeatAt\" TIMESTAMP WITH TIME ZONE");
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TABLE \"job\" DROP COLUMN \"heartbeatAt\"");
  }
}
