import type { MigrationInterface, QueryRunner } from 'typeorm';

export class ContributionWithdrawn1796580987053 implements MigrationInterface {
  name = 'ContributionWithdrawn1796580987053';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("ALTER TYPE \"public\".\"contribution_status\" RENAME TO \"contribution_status_old\"");
    await runner.query("CREATE TYPE \"public\".\"contribution_status\" AS ENUM('PENDING', 'TRAINING', 'MERGED', 'FAILED', 'REVERTED', 'WITHDRAWN')");
    await runner.query("ALTER TABLE \"contribution\" ALTER COLUMN \"status\" DROP DEFAULT");
    await runner.query("ALTER TABLE \"contribution\" ALTER COLUMN \"status\" TYPE \"public\".\"contribution_status\" USING \"status\"::\"text\"::\"public\".\"contribution_status\"");
    await runner.query("ALTER TABLE \"contribution\" ALTER COLUMN \"status\" SET DEFAULT 'PENDING'");
    await runner.query("DROP TYPE \"public\".\"contribution_status_old\"");
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query("CREATE TYPE \"public\".\"contribution_status_old\" AS ENUM('PENDING', 'TRAINING', 'MERGED', 'FAILED', 'REVERTED')");
    await runner.query("ALTER TABLE \"contribution\" ALTER COLUMN \"status\" DROP DEFAULT");
    await runner.query("ALTER TABLE \"contribution\" ALTER COLUMN \"status\" TYPE \"public\".\"contribution_status_old\" USING \"status\"::\"text\"::\"public\".\"contribution_status_old\"");
    await runner.query("ALTER TABLE \"contribution\" ALTER COLUMN \"status\" SET DEFAULT 'PENDING'");
    await runner.query("DROP TYPE \"public\".\"contribution_status\"");
    await runner.query("ALTER TYPE \"public\".\"contribution_status_old\" RENAME TO \"contribution_status\"");
  }
}
