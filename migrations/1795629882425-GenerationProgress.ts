import type { MigrationInterface, QueryRunner } from 'typeorm';

export class GenerationProgress1795629882425 implements MigrationInterface {
  name = 'GenerationProgress1795629882425';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TABLE \"job\" ADD \"step\" integer NOT NULL DEFAULT '0'");
    await runner.query("ALTER TABLE \"job\" ADD \"steps\" integer NOT NULL DEFAULT '0'");
    await runner.query("ALTER TABLE \"job\" ADD \"loss\" real");
    await runner.query("ALTER TABLE \"image\" ADD \"width\" integer NOT NULL");
    await runner.query("ALTER TABLE \"image\" ADD \"height\" integer NOT NULL");
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TABLE \"image\" DROP COLUMN \"height\"");
    await runner.query("ALTER TABLE \"image\" DROP COLUMN \"width\"");
    await runner.query("ALTER TABLE \"job\" DROP COLUMN \"loss\"");
    await runner.query("ALTER TABLE \"job\" DROP COLUMN \"steps\"");
    await runner.query("ALTER TABLE \"job\" DROP COLUMN \"step\"");
  }
}
