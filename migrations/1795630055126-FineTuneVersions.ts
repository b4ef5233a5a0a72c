import type { MigrationInterface, QueryRunner } from 'typeorm';

/** The immutability trigger of model versions, over the columns a version has at each end of this migration. */
const immutable = (columns: string) => `
  CREATE OR REPLACE FUNCTION model_version_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    IF (${columns.replaceAll('$', 'NEW.')}) IS DISTINCT FROM (${columns.replaceAll('$', 'OLD.')})
       OR NEW."contributionId" IS NOT NULL AND NEW."contributionId" IS DISTINCT FROM OLD."contributionId" THEN
      RAISE EXCEPTION 'model versions are immutable' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
  END $$`;
const BEFORE = '$id, $"modelId", $number, $"weightsKey", $"parentVersionId", $"createdAt"';

export class FineTuneVersions1795630055126 implements MigrationInterface {
  name = 'FineTuneVersions1795630055126';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("CREATE TYPE \"public\".\"fine_tune_method\" AS ENUM('LORA', 'FULL')");
    await runner.query("ALTER TABLE \"model_version\" ADD \"method\" \"public\".\"fine_tune_method\" NOT NULL");
    await runner.query("ALTER TABLE \"contribution\" ADD \"priorSplit\" jsonb");
    await runner.query("ALTER TABLE \"model_version\" ALTER COLUMN \"weightsKey\" DROP NOT NULL");
    await runner.query("ALTER TABLE \"instance_image\" DROP CONSTRAINT \"FK_e98c4e7457f5a84f94e1f092b22\"");
    await runner.query("ALTER TABLE \"instance_image\" ALTER COLUMN \"conceptId\" DROP NOT NULL");
    await runner.query("ALTER TABLE \"instance_image\" ADD CONSTRAINT \"FK_e98c4e7457f5a84f94e1f092b22\" FOREIGN KEY (\"conceptId\") REFERENCES \"concept\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    // Written by hand: a version's method is as immutable as its weights.
    await runner.query(immutable(`${BEFORE}, $method`));
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query(immutable(BEFORE));
    await runner.query("ALTER TABLE \"instance_image\" DROP CONSTRAINT \"FK_e98c4e7457f5a84f94e1f092b22\"");
    await runner.query("ALTER TABLE \"instance_image\" ALTER COLUMN \"conceptId\" SET NOT NULL");
    await runner.query("ALTER TABLE \"instance_image\" ADD CONSTRAINT \"FK_e98c4e7457f5a84f94e1f092b22\" FOREIGN KEY (\"conceptId\") REFERENCES \"concept\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
    await runner.query("ALTER TABLE \"model_version\" ALTER COLUMN \"weightsKey\" SET NOT NULL");
    await runner.query("ALTER TABLE \"contribution\" DROP COLUMN \"priorSplit\"");
    await runner.query("ALTER TABLE \"model_version\" DROP COLUMN \"method\"");
    await runner.query("DROP TYPE \"public\".\"fine_tune_method\"");
  }
}
