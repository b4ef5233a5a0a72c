import type { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * job_admission(): the per-user job limits counted inside PostgreSQL (src/services/job-limits.ts).
 * Its statements run after it takes the user's lock, each with a fresh snapshot (a VOLATILE function
 * under READ COMMITTED), so they see every job committed by the submission that held the lock before;
 * called in the statement that inserts the job, the lock is held for no client round trip.
 */
export class JobAdmission1796589500000 implements MigrationInterface {
  name = 'JobAdmission1796589500000';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query(`
      CREATE FUNCTION job_admission(owner uuid, images int, max_active int, max_per_minute int, max_images_per_day int)
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
      END $$`);
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query('DROP FUNCTION job_admission(uuid, int, int, int, int)');
  }
}
