import type { MigrationInterface, QueryRunner } from 'typeorm';

/** job_admission() (migration JobAdmission) as it was, and as it is here: a fine-tune's previews are not images made. */
const JOB_ADMISSION_BEFORE = `
      CREATE OR REPLACE FUNCTION job_admission(owner uuid, images int, max_active int, max_per_minute int, max_images_per_day int)
      RETURNS TABLE (active int, recent int, coming int, made int, refusal text)
      LANGUAGE plpgsql VOLATILE AS $$
      BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended('bigdiffusion:jobs-of:' || owner, 0));
        recent := 0;
        coming := 0;
        made := 0;
        -- Each count an index range (active jobs by (ownerId, status), the last minute's by (ownerId,
        -- createdAt, id)) that stops at its limit: a user at a limit costs no more than one below it.
        SELECT count(*) INTO active FROM (SELECT FROM job
          WHERE "ownerId" = owner AND status IN ('QUEUED', 'RUNNING') LIMIT max_active) counted;
        IF active >= max_active THEN
          refusal := 'ACTIVE';
          RETURN NEXT;
          RETURN;
        END IF;
        SELECT count(*) INTO recent FROM (SELECT FROM job
          WHERE "ownerId" = owner AND "createdAt" > now() - interval '1 minute' LIMIT max_per_minute) counted;
        IF recent >= max_per_minute THEN
          refusal := 'PER_MINUTE';
          RETURN NEXT;
          RETURN;
        END IF;
        IF images > 0 THEN
          SELECT coalesce(sum((params->>'numImages')::int), 0) INTO coming FROM job
            WHERE "ownerId" = owner AND status IN ('QUEUED', 'RUNNING') AND type = 'GENERATE';
          SELECT count(*) INTO made FROM (SELECT FROM image JOIN job ON job.id = image."jobId"
            WHERE job."ownerId" = owner AND image."createdAt" > now() - interval '1 day' LIMIT max_images_per_day::bigint + 1) counted;
          IF made + coming + images > max_images_per_day THEN
            refusal := 'IMAGES_PER_DAY';
          END IF;
        END IF;
        RETURN NEXT;
      END $$`;
export const JOB_ADMISSION_PREVIEWS_APART = `
      CREATE OR REPLACE FUNCTION job_admission(owner uuid, images int, max_active int, max_per_minute int, max_images_per_day int)
      RETURNS TABLE (active int, recent int, coming int, made int, refusal text)
      LANGUAGE plpgsql VOLATILE AS $$
      BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended('bigdiffusion:jobs-of:' || owner, 0));
        recent := 0;
        coming := 0;
        made := 0;
        -- Each count an index range (active jobs by (ownerId, status), the last minute's by (ownerId,
        -- createdAt, id)) that stops at its limit: a user at a limit costs no more than one below it.
        SELECT count(*) INTO active FROM (SELECT FROM job
          WHERE "ownerId" = owner AND status IN ('QUEUED', 'RUNNING') LIMIT max_active) counted;
        IF active >= max_active THEN
          refusal := 'ACTIVE';
          RETURN NEXT;
          RETURN;
        END IF;
        SELECT count(*) INTO recent FROM (SELECT FROM job
          WHERE "ownerId" = owner AND "createdAt" > now() - interval '1 minute' LIMIT max_per_minute) counted;
        IF recent >= max_per_minute THEN
          refusal := 'PER_MINUTE';
          RETURN NEXT;
          RETURN;
        END IF;
        IF images > 0 THEN
          SELECT coalesce(sum((params->>'numImages')::int), 0) INTO coming FROM job
            WHERE "ownerId" = owner AND status IN ('QUEUED', 'RUNNING') AND type = 'GENERATE';
          SELECT count(*) INTO made FROM (SELECT FROM image JOIN job ON job.id = image."jobId"
            WHERE job."ownerId" = owner AND image."previewStep" IS NULL AND image."createdAt" > now() - interval '1 day' LIMIT max_images_per_day::bigint + 1) counted;
          IF made + coming + images > max_images_per_day THEN
            refusal := 'IMAGES_PER_DAY';
          END IF;
        END IF;
        RETURN NEXT;
      END $$`;

export class IntegratorPreviewsExports1796590000000 implements MigrationInterface {
  name = 'IntegratorPreviewsExports1796590000000';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query("CREATE TYPE \"public\".\"weight_format\" AS ENUM('DIFFUSERS_LORA', 'KOHYA_LORA', 'DIFFUSERS_UNET', 'DIFFUSERS_PACK')");
    await runner.query("CREATE TABLE \"weight_export\" (\"id\" uuid NOT NULL DEFAULT uuid_generate_v4(), \"ownerId\" uuid NOT NULL, \"modelId\" uuid NOT NULL, \"versionId\" uuid, \"format\" \"public\".\"weight_format\" NOT NULL, \"objectKey\" character varying(1024) NOT NULL, \"fileName\" character varying(255) NOT NULL, \"bytes\" bigint NOT NULL, \"createdAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"expiresAt\" TIMESTAMP WITH TIME ZONE NOT NULL, CONSTRAINT \"PK_ae3e8164560cfd4e88a978e62c1\" PRIMARY KEY (\"id\"))");
    await runner.query("CREATE INDEX \"IDX_21d9c7a48810b9672675c5747f\" ON \"weight_export\" (\"ownerId\") ");
    await runner.query("CREATE INDEX \"IDX_7c0dd1f244ed9fc3c1c03a6aa0\" ON \"weight_export\" (\"expiresAt\") ");
    await runner.query("CREATE TABLE \"worker_process\" (\"id\" uuid NOT NULL, \"host\" character varying(255) NOT NULL, \"pid\" integer NOT NULL, \"device\" character varying(32) NOT NULL, \"startedAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"lastHeartbeatAt\" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), \"currentJobIds\" uuid array NOT NULL DEFAULT '{}', CONSTRAINT \"PK_2712017c34ed1cb5bf21bb3426d\" PRIMARY KEY (\"id\"))");
    await runner.query("ALTER TABLE \"model_version\" ADD \"bytes\" bigint NOT NULL DEFAULT '0'");
    await runner.query("ALTER TABLE \"image\" ADD \"bytes\" bigint NOT NULL DEFAULT '0'");
    await runner.query("ALTER TABLE \"image\" ADD \"previewStep\" integer");
    await runner.query("ALTER TABLE \"instance_image\" ADD \"bytes\" bigint NOT NULL DEFAULT '0'");
    await runner.query(JOB_ADMISSION_PREVIEWS_APART);
    await runner.query("ALTER TABLE \"weight_export\" ADD CONSTRAINT \"FK_21d9c7a48810b9672675c5747fd\" FOREIGN KEY (\"ownerId\") REFERENCES \"user\"(\"id\") ON DELETE CASCADE ON UPDATE NO ACTION");
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query(JOB_ADMISSION_BEFORE);
    await runner.query("ALTER TABLE \"weight_export\" DROP CONSTRAINT \"FK_21d9c7a48810b9672675c5747fd\"");
    await runner.query("ALTER TABLE \"instance_image\" DROP COLUMN \"bytes\"");
    await runner.query("ALTER TABLE \"image\" DROP COLUMN \"previewStep\"");
    await runner.query("ALTER TABLE \"image\" DROP COLUMN \"bytes\"");
    await runner.query("ALTER TABLE \"model_version\" DROP COLUMN \"bytes\"");
    await runner.query("DROP TABLE \"worker_process\"");
    await runner.query("DROP INDEX \"public\".\"IDX_7c0dd1f244ed9fc3c1c03a6aa0\"");
    await runner.query("DROP INDEX \"public\".\"IDX_21d9c7a48810b9672675c5747f\"");
    await runner.query("DROP TABLE \"weight_export\"");
    await runner.query("DROP TYPE \"public\".\"weight_format\"");
  }
}
