import type { MigrationInterface, QueryRunner } from 'typeorm';
import { JOB_ADMISSION_PREVIEWS_APART } from './1796590000000-IntegratorPreviewsExports';

/**
 * job_admissions(): job_admission() for a group of one user's submissions, in order
 * (src/services/job-admissions.ts). It takes the user's lock and counts once, then decides each
 * submission with the counts the ones before it left: the first are admitted up to the limits, the rest
 * refused, as if they had come one after another. One row per submission, numbered from 1.
 */
export class JobAdmissionsInGroups1796591000000 implements MigrationInterface {
  name = 'JobAdmissionsInGroups1796591000000';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query(JOB_ADMISSIONS_COUNTING_ROWS);
    await runner.query('DROP FUNCTION job_admission(uuid, int, int, int, int)');
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query(JOB_ADMISSION_PREVIEWS_APART);
    await runner.query('DROP FUNCTION job_admissions(uuid, int[], int, int, int)');
  }
}

/**
 * Each submission decided with the counts the ones before it left (job_admissions()'s counts `active`, `recent`,
 * `coming`, `made`; one row per submission). Migration UsageCounters counts differently and decides the same.
 */
export const DECIDE_IN_ORDER = `
        -- The loop's own variable: a FOR loop's counter hides the output column of its name.
        FOR i IN 1 .. coalesce(array_length(images, 1), 0) LOOP
          item := i;
          refusal := CASE
            WHEN active >= max_active THEN 'ACTIVE'
            WHEN recent >= max_per_minute THEN 'PER_MINUTE'
            WHEN images[i] > 0 AND made + coming + images[i] > max_images_per_day THEN 'IMAGES_PER_DAY'
          END;
          RETURN NEXT;
          IF refusal IS NULL THEN
            active := active + 1;
            recent := recent + 1;
            coming := coming + images[i];
          END IF;
        END LOOP;`;

/** job_admissions() as made here (migration UsageCounters replaces it with one that reads counters). */
export const JOB_ADMISSIONS_COUNTING_ROWS = `
      CREATE OR REPLACE FUNCTION job_admissions(owner uuid, images int[], max_active int, max_per_minute int, max_images_per_day int)
      RETURNS TABLE (item int, active int, recent int, coming int, made int, refusal text)
      LANGUAGE plpgsql VOLATILE AS $$
      BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended('bigdiffusion:jobs-of:' || owner, 0));
        -- Each count an index range (active jobs by (ownerId, status), the last minute's by (ownerId,
        -- createdAt, id)) that stops at its limit: a user at a limit costs no more than one below it.
        SELECT count(*) INTO active FROM (SELECT FROM job
          WHERE "ownerId" = owner AND status IN ('QUEUED', 'RUNNING') LIMIT max_active) counted;
        SELECT count(*) INTO recent FROM (SELECT FROM job
          WHERE "ownerId" = owner AND "createdAt" > now() - interval '1 minute' LIMIT max_per_minute) counted;
        coming := 0;
        made := 0;
        IF EXISTS (SELECT FROM unnest(images) AS wanted WHERE wanted > 0) THEN
          SELECT coalesce(sum((params->>'numImages')::int), 0) INTO coming FROM job
            WHERE "ownerId" = owner AND status IN ('QUEUED', 'RUNNING') AND type = 'GENERATE';
          SELECT count(*) INTO made FROM (SELECT FROM image JOIN job ON job.id = image."jobId"
            WHERE job."ownerId" = owner AND image."previewStep" IS NULL AND image."createdAt" > now() - interval '1 day' LIMIT max_images_per_day::bigint + 1) counted;
        END IF;
${DECIDE_IN_ORDER}
      END $$`;
