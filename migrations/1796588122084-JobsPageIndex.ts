import type { MigrationInterface, QueryRunner } from 'typeorm';

export class JobsPageIndex1796588122084 implements MigrationInterface {
  name = 'JobsPageIndex1796588122084';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("DROP INDEX \"public\".\"IDX_8c782e00f8963ad6bfd962759f\"");
    await runner.query("CREATE INDEX \"IDX_49361522d31ec22705ae8b83c8\" ON \"job\" (\"ownerId\", \"createdAt\", \"id\") ");
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query("DROP INDEX \"public\".\"IDX_49361522d31ec22705ae8b83c8\"");
    await runner.query("CREATE INDEX \"IDX_8c782e00f8963ad6bfd962759f\" ON \"job\" (\"ownerId\", \"createdAt\") ");
  }
}
