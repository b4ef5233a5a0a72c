import type { MigrationInterface, QueryRunner } from 'typeorm';

export class ListIndexes1796568375124 implements MigrationInterface {
  name = 'ListIndexes1796568375124';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("DROP INDEX \"public\".\"IDX_4230d15401eafcf6f453820801\"");
    await runner.query("CREATE INDEX \"IDX_31ed636bff262e6159e2caec3a\" ON \"model\" (\"kind\") ");
    await runner.query("CREATE INDEX \"IDX_660a90eb35454113dd9f3901d0\" ON \"contribution\" (\"conceptId\") ");
    await runner.query("CREATE INDEX \"IDX_cf65e66350f706f164bffde04c\" ON \"job\" (\"ownerId\", \"status\") ");
    await runner.query("CREATE INDEX \"IDX_8c782e00f8963ad6bfd962759f\" ON \"job\" (\"ownerId\", \"createdAt\") ");
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query("DROP INDEX \"public\".\"IDX_8c782e00f8963ad6bfd962759f\"");
    await runner.query("DROP INDEX \"public\".\"IDX_cf65e66350f706f164bffde04c\"");
    await runner.query("DROP INDEX \"public\".\"IDX_660a90eb35454113dd9f3901d0\"");
    await runner.query("DROP INDEX \"public\".\"IDX_31ed636bff262e6159e2caec3a\"");
    await runner.query("CREATE INDEX \"IDX_4230d15401eafcf6f453820801\" ON \"job\" (\"ownerId\") ");
  }
}
