import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Model versions are immutable: a revert moves a model's head, it never edits a version. The one
 * update allowed is the database's own ON DELETE SET NULL when the contribution behind a version goes.
 * Written by hand: TypeORM's schema diff does not know triggers.
 */
export class ImmutableModelVersions1795627905233 implements MigrationInterface {
  name = 'ImmutableModelVersions1795627905233';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query(`
      CREATE FUNCTION model_version_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF (NEW.id, NEW."modelId", NEW.number, NEW."weightsKey", NEW."parentVersionId", NEW."createdAt")
             IS DISTINCT FROM (OLD.id, OLD."modelId", OLD.number, OLD."weightsKey", OLD."parentVersionId", OLD."createdAt")
           OR NEW."contributionId" IS NOT NULL AND NEW."contributionId" IS DISTINCT FROM OLD."contributionId" THEN
          RAISE EXCEPTION 'model versions are immutable' USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN NEW;
      END $$`);
    await runner.query(
      'CREATE TRIGGER model_version_immutable BEFORE UPDATE ON model_version FOR EACH ROW EXECUTE FUNCTION model_version_immutable()',
    );
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query('DROP TRIGGER model_version_immutable ON model_version');
    await runner.query('DROP FUNCTION model_version_immutable()');
  }
}
