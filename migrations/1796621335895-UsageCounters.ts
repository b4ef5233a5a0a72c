import type { MigrationInterface, QueryRunner } from 'typeorm';
import { DECIDE_IN_ORDER, JOB_ADMISSIONS_COUNTING_ROWS } from './1796591000000-JobAdmissionsInGroups';

/**
 * What a user uses, counted as it changes, so that admitting a job (src/services/job-admissions.ts) and
 * checking storage (src/services/storage-quota.ts) cost the same whatever the user has made:
 * - user_usage_now (a view): per user, jobs queued or running, the images those of them that generate
 *   will make, and the bytes the user keeps in storage (training photos, every image of their jobs,
 *   previews included, and the weights of the versions of the models they own).
 * - user_job_starts: jobs created, per user and bucket (the whole second of their createdAt), for the
 *   per-minute limit.
 * - user_images_made: images made (previews aside), per user and bucket (the whole minute of their
 *   createdAt), for the per-day limit.
 * Triggers on the rows that carry these facts keep the counts, whatever writes them (workers, cancellations,
 * cascades, uploads). A row's owner never changes (a trigger refuses it), so a row's share stays with one user.
 * An image finds its owner through its job, a model version through its model: when the job or model is
 * deleted, its children cannot, so the parent takes their shares back before the cascade deletes them.
 *
 * The view sums a row per user (user_usage, made with the user) and the changes since (user_usage_changes),
 * one row per user and transaction. Triggers never update a row another transaction writes: a counter row
 * updated in place would be locked by every transaction that changes it, in whatever order it takes its
 * other locks (a finishing fine-tune holds its owner's counter, then waits for the model's row; a new
 * fine-tune of the same model holds the model's row, then waits for the counter: a deadlock).
 * Admission and the storage checks fold the user's committed changes into their row (fold_usage()), and
 * admission prunes the user's buckets out of their window, so both stay few. Buckets are updated in place:
 * jobs start under the admission lock, and images are made by the transaction that finishes their job.
 * No foreign key to the user: a user's deletion cascades to rows whose triggers count against that user,
 * and PostgreSQL checks the key of a row written twice in a transaction, so the second would fail on the
 * user just deleted. A trigger on the user deletes their counters instead, after the cascades.
 */
export class UsageCounters1796621335895 implements MigrationInterface {
  name = 'UsageCounters1796621335895';

  async up(runner: QueryRunner): Promise<void> {
    await runner.query(`
      CREATE TABLE user_usage (
        "userId" uuid PRIMARY KEY,
        "activeJobs" int NOT NULL DEFAULT 0,
        "imagesComing" int NOT NULL DEFAULT 0,
        "storedBytes" bigint NOT NULL DEFAULT 0)`);
    await runner.query(`
      CREATE TABLE user_usage_changes (
        "userId" uuid NOT NULL,
        "transaction" xid8 NOT NULL,
        "activeJobs" int NOT NULL,
        "imagesComing" int NOT NULL,
        "storedBytes" bigint NOT NULL,
        PRIMARY KEY ("userId", "transaction"))`);
    await runner.query(`
      CREATE VIEW user_usage_now AS
      SELECT u."userId",
             u."activeJobs" + coalesce(sum(c."activeJobs"), 0)::int AS "activeJobs",
             u."imagesComing" + coalesce(sum(c."imagesComing"), 0)::int AS "imagesComing",
             u."storedBytes" + coalesce(sum(c."storedBytes"), 0)::bigint AS "storedBytes"
        FROM user_usage u LEFT JOIN user_usage_changes c ON c."userId" = u."userId"
       GROUP BY u."userId"`);
    // The user's counts, the committed changes folded into their row first, under that row's lock until
    // the commit: what admission and the storage checks read, so the changes stay few.
    await runner.query(`
      CREATE FUNCTION fold_usage(owner uuid) RETURNS SETOF user_usage_now LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM FROM user_usage WHERE "userId" = owner FOR UPDATE;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'user % has no usage row', owner;
        END IF;
        WITH folded AS (DELETE FROM user_usage_changes WHERE "userId" = owner RETURNING *)
        UPDATE user_usage u
           SET "activeJobs" = u."activeJobs" + f."activeJobs", "imagesComing" = u."imagesComing" + f."imagesComing", "storedBytes" = u."storedBytes" + f."storedBytes"
          FROM (SELECT sum("activeJobs") AS "activeJobs", sum("imagesComing") AS "imagesComing", sum("storedBytes") AS "storedBytes" FROM folded) f
         WHERE u."userId" = owner AND f."activeJobs" IS NOT NULL;
        RETURN QUERY SELECT * FROM user_usage_now WHERE "userId" = owner;
      END $$`);
    await runner.query(`
      CREATE TABLE user_job_starts (
        "userId" uuid NOT NULL,
        bucket timestamptz NOT NULL,
        jobs int NOT NULL,
        PRIMARY KEY ("userId", bucket))`);
    await runner.query(`
      CREATE TABLE user_images_made (
        "userId" uuid NOT NULL,
        bucket timestamptz NOT NULL,
        images int NOT NULL,
        PRIMARY KEY ("userId", bucket))`);

    // Each row's share, one definition for the triggers and the backfill. A missing row (OLD of an insert,
    // NEW of a delete) has a null id and no share.
    await runner.query(`
      CREATE FUNCTION job_is_active(j job) RETURNS int LANGUAGE sql IMMUTABLE AS $$
        SELECT CASE WHEN j.status IN ('QUEUED', 'RUNNING') THEN 1 ELSE 0 END $$`);
    await runner.query(`
      CREATE FUNCTION job_images_coming(j job) RETURNS int LANGUAGE sql IMMUTABLE AS $$
        SELECT CASE WHEN j.status IN ('QUEUED', 'RUNNING') AND j.type = 'GENERATE' THEN coalesce((j.params->>'numImages')::int, 0) ELSE 0 END $$`);
    await runner.query(`
      CREATE FUNCTION image_is_made(i image) RETURNS int LANGUAGE sql IMMUTABLE AS $$
        SELECT CASE WHEN i.id IS NOT NULL AND i."previewStep" IS NULL THEN 1 ELSE 0 END $$`);

    // Bucket counts up or down. Only a new row adds: its user exists. Taking back never inserts, so a row
    // deleted with its user (whose buckets may be gone already) or in a pruned bucket changes nothing.
    await runner.query(`
      CREATE FUNCTION count_job_start(owner uuid, created timestamptz, n int) RETURNS void LANGUAGE sql AS $$
        INSERT INTO user_job_starts ("userId", bucket, jobs) SELECT owner, date_trunc('second', created), n WHERE n > 0
          ON CONFLICT ("userId", bucket) DO UPDATE SET jobs = user_job_starts.jobs + n;
        UPDATE user_job_starts SET jobs = jobs + n WHERE n < 0 AND "userId" = owner AND bucket = date_trunc('second', created) $$`);
    await runner.query(`
      CREATE FUNCTION count_images_made(owner uuid, created timestamptz, n int) RETURNS void LANGUAGE sql AS $$
        INSERT INTO user_images_made ("userId", bucket, images) SELECT owner, date_trunc('minute', created), n WHERE n > 0
          ON CONFLICT ("userId", bucket) DO UPDATE SET images = user_images_made.images + n;
        UPDATE user_images_made SET images = images + n WHERE n < 0 AND "userId" = owner AND bucket = date_trunc('minute', created) $$`);
    await runner.query(`
      CREATE FUNCTION count_usage(owner uuid, active int, coming int, bytes bigint) RETURNS void LANGUAGE sql AS $$
        INSERT INTO user_usage_changes ("userId", "transaction", "activeJobs", "imagesComing", "storedBytes")
        SELECT owner, pg_current_xact_id(), active, coming, bytes WHERE (active, coming, bytes) <> (0, 0, 0)
            ON CONFLICT ("userId", "transaction") DO UPDATE SET "activeJobs" = user_usage_changes."activeJobs" + active,
               "imagesComing" = user_usage_changes."imagesComing" + coming, "storedBytes" = user_usage_changes."storedBytes" + bytes $$`);

    await runner.query(`
      CREATE FUNCTION user_counters() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'INSERT' THEN
          INSERT INTO user_usage ("userId") VALUES (NEW.id);
        ELSE
          DELETE FROM user_usage WHERE "userId" = OLD.id;
          DELETE FROM user_usage_changes WHERE "userId" = OLD.id;
          DELETE FROM user_job_starts WHERE "userId" = OLD.id;
          DELETE FROM user_images_made WHERE "userId" = OLD.id;
        END IF;
        RETURN NULL;
      END $$`);
    await runner.query(`
      CREATE FUNCTION owner_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF to_jsonb(NEW)->TG_ARGV[0] IS DISTINCT FROM to_jsonb(OLD)->TG_ARGV[0] THEN
          RAISE EXCEPTION '%.% does not change: usage counters rely on it', TG_TABLE_NAME, TG_ARGV[0] USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN NEW;
      END $$`);
    // Admission inserts a group of jobs in one statement: counted per statement, a few statements in all
    // rather than a few per job (which doubled the cost of inserting a job).
    await runner.query(`
      CREATE FUNCTION jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM count_usage("ownerId", sum(job_is_active(j))::int, sum(job_images_coming(j))::int, 0) FROM inserted j GROUP BY "ownerId";
        PERFORM count_job_start("ownerId", bucket, count(*)::int)
           FROM (SELECT "ownerId", date_trunc('second', "createdAt") AS bucket FROM inserted) j GROUP BY "ownerId", bucket;
        RETURN NULL;
      END $$`);
    await runner.query(`
      CREATE FUNCTION job_usage() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM count_usage(OLD."ownerId", job_is_active(NEW) - job_is_active(OLD), job_images_coming(NEW) - job_images_coming(OLD), 0);
        IF TG_OP = 'DELETE' THEN
          PERFORM count_job_start(OLD."ownerId", OLD."createdAt", -1);
          -- Its images, before the cascade deletes them (they find their owner through this row).
          PERFORM count_usage(OLD."ownerId", 0, 0, -(SELECT coalesce(sum(bytes), 0) FROM image WHERE "jobId" = OLD.id)::bigint);
          PERFORM count_images_made(OLD."ownerId", i."createdAt", -image_is_made(i)) FROM image i WHERE i."jobId" = OLD.id;
          RETURN OLD;
        END IF;
        IF date_trunc('second', NEW."createdAt") <> date_trunc('second', OLD."createdAt") THEN
          PERFORM count_job_start(OLD."ownerId", OLD."createdAt", -1);
          PERFORM count_job_start(OLD."ownerId", NEW."createdAt", 1);
        END IF;
        RETURN NULL;
      END $$`);
    await runner.query(`
      CREATE FUNCTION image_usage() RETURNS trigger LANGUAGE plpgsql AS $$
      DECLARE
        owner uuid := (SELECT "ownerId" FROM job WHERE id = coalesce(NEW."jobId", OLD."jobId"));
      BEGIN
        IF owner IS NULL THEN
          RETURN NULL; -- deleted with its job, which took its share back
        END IF;
        PERFORM count_usage(owner, 0, 0, coalesce(NEW.bytes, 0) - coalesce(OLD.bytes, 0));
        IF (image_is_made(NEW), date_trunc('minute', NEW."createdAt")) IS DISTINCT FROM (image_is_made(OLD), date_trunc('minute', OLD."createdAt")) THEN
          PERFORM count_images_made(owner, OLD."createdAt", -image_is_made(OLD));
          PERFORM count_images_made(owner, NEW."createdAt", image_is_made(NEW));
        END IF;
        RETURN NULL;
      END $$`);
    await runner.query(`
      CREATE FUNCTION instance_image_usage() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM count_usage(coalesce(NEW."ownerId", OLD."ownerId"), 0, 0, coalesce(NEW.bytes, 0) - coalesce(OLD.bytes, 0));
        RETURN NULL;
      END $$`);
    await runner.query(`
      CREATE FUNCTION model_version_usage() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        -- None: a public model's (nobody's), or deleted with its model, which took its share back.
        PERFORM count_usage(model."ownerId", 0, 0, coalesce(NEW.bytes, 0) - coalesce(OLD.bytes, 0))
           FROM model WHERE id = coalesce(NEW."modelId", OLD."modelId") AND "ownerId" IS NOT NULL;
        RETURN NULL;
      END $$`);
    await runner.query(`
      CREATE FUNCTION model_usage() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        -- Its versions, before the cascade deletes them (they find their owner through this row).
        PERFORM count_usage(OLD."ownerId", 0, 0, -(SELECT coalesce(sum(bytes), 0) FROM model_version WHERE "modelId" = OLD.id)::bigint)
          WHERE OLD."ownerId" IS NOT NULL;
        RETURN OLD;
      END $$`);

    // Triggers first: they lock their tables against writes until the commit, so the backfill below
    // counts every row and no row is counted twice.
    for (const [table, column] of [['job', 'ownerId'], ['model', 'ownerId'], ['instance_image', 'ownerId'], ['image', 'jobId']]) {
      await runner.query(`CREATE TRIGGER owner_fixed BEFORE UPDATE OF "${column}" ON ${table} FOR EACH ROW EXECUTE FUNCTION owner_fixed('${column}')`);
    }
    await runner.query('CREATE TRIGGER counters AFTER INSERT OR DELETE ON "user" FOR EACH ROW EXECUTE FUNCTION user_counters()');
    await runner.query('CREATE TRIGGER usage_counts_inserted AFTER INSERT ON job REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION jobs_inserted()');
    await runner.query('CREATE TRIGGER usage_counts AFTER UPDATE OF status, type, params, "createdAt" ON job FOR EACH ROW EXECUTE FUNCTION job_usage()');
    await runner.query('CREATE TRIGGER usage_counts_before_cascade BEFORE DELETE ON job FOR EACH ROW EXECUTE FUNCTION job_usage()');
    await runner.query('CREATE TRIGGER usage_counts AFTER INSERT OR DELETE OR UPDATE OF bytes, "previewStep", "createdAt" ON image FOR EACH ROW EXECUTE FUNCTION image_usage()');
    await runner.query('CREATE TRIGGER usage_counts AFTER INSERT OR DELETE OR UPDATE OF bytes ON instance_image FOR EACH ROW EXECUTE FUNCTION instance_image_usage()');
    await runner.query('CREATE TRIGGER usage_counts AFTER INSERT OR DELETE OR UPDATE OF bytes ON model_version FOR EACH ROW EXECUTE FUNCTION model_version_usage()');
    await runner.query('CREATE TRIGGER usage_counts_before_cascade BEFORE DELETE ON model FOR EACH ROW EXECUTE FUNCTION model_usage()');

    await runner.query(`
      INSERT INTO user_usage ("userId", "activeJobs", "imagesComing", "storedBytes")
      SELECT u.id,
             (SELECT coalesce(sum(job_is_active(j)), 0) FROM job j WHERE j."ownerId" = u.id),
             (SELECT coalesce(sum(job_images_coming(j)), 0) FROM job j WHERE j."ownerId" = u.id),
             (SELECT coalesce(sum(p.bytes), 0) FROM instance_image p WHERE p."ownerId" = u.id)
           + (SELECT coalesce(sum(i.bytes), 0) FROM image i JOIN job j ON j.id = i."jobId" WHERE j."ownerId" = u.id)
           + (SELECT coalesce(sum(v.bytes), 0) FROM model_version v JOIN model m ON m.id = v."modelId" WHERE m."ownerId" = u.id)
        FROM "user" u`);
    await runner.query(`
      INSERT INTO user_job_starts ("userId", bucket, jobs)
      SELECT "ownerId", date_trunc('second', "createdAt"), count(*) FROM job WHERE "createdAt" >= now() - interval '61 seconds' GROUP BY 1, 2`);
    await runner.query(`
      INSERT INTO user_images_made ("userId", bucket, images)
      SELECT j."ownerId", date_trunc('minute', i."createdAt"), sum(image_is_made(i)) FROM image i JOIN job j ON j.id = i."jobId"
       WHERE i."createdAt" >= now() - interval '1 day 1 minute' GROUP BY 1, 2`);
    await runner.query(JOB_ADMISSIONS_COUNTED_AHEAD);
  }

  async down(runner: QueryRunner): Promise<void> {
    await runner.query(JOB_ADMISSIONS_COUNTING_ROWS);
    for (const [table, trigger] of [['job', 'usage_counts_inserted'], ['job', 'usage_counts'], ['job', 'usage_counts_before_cascade'], ['image', 'usage_counts'], ['instance_image', 'usage_counts'],
      ['model_version', 'usage_counts'], ['model', 'usage_counts_before_cascade'], ['"user"', 'counters'],
      ['job', 'owner_fixed'], ['model', 'owner_fixed'], ['instance_image', 'owner_fixed'], ['image', 'owner_fixed']]) {
      await runner.query(`DROP TRIGGER ${trigger} ON ${table}`);
    }
    for (const fn of ['jobs_inserted()', 'job_usage()', 'image_usage()', 'instance_image_usage()', 'model_version_usage()', 'model_usage()', 'user_counters()', 'owner_fixed()',
      'count_usage(uuid, int, int, bigint)', 'count_job_start(uuid, timestamptz, int)', 'count_images_made(uuid, timestamptz, int)',
      'job_is_active(job)', 'job_images_coming(job)', 'image_is_made(image)']) {
      await runner.query(`DROP FUNCTION ${fn}`);
    }
    await runner.query('DROP FUNCTION fold_usage(uuid)');
    await runner.query('DROP VIEW user_usage_now');
    await runner.query('DROP TABLE user_usage_changes');
    await runner.query('DROP TABLE user_images_made');
    await runner.query('DROP TABLE user_job_starts');
    await runner.query('DROP TABLE user_usage');
  }
}

/**
 * job_admissions() on the counters. fold_usage() locks the user's user_usage row until the commit, which
 * orders the user's admissions as the advisory lock did, and reads their counts; the user's expired
 * buckets are pruned and the rest summed. The windows are whole buckets: a job counts against the
 * per-minute limit from its second and the 60 whole seconds after it (60 to 61 s), an image against the
 * per-day limit from its minute and the 1,440 whole minutes after it (24 h to 24 h 1 min).
 */
const JOB_ADMISSIONS_COUNTED_AHEAD = `
      CREATE OR REPLACE FUNCTION job_admissions(owner uuid, images int[], max_active int, max_per_minute int, max_images_per_day int)
      RETURNS TABLE (item int, active int, recent int, coming int, made int, refusal text)
      LANGUAGE plpgsql VOLATILE AS $$
      DECLARE
        minute_from timestamptz := date_trunc('second', now()) - interval '60 seconds';
        day_from timestamptz := date_trunc('minute', now()) - interval '1 day';
      BEGIN
        SELECT u."activeJobs", u."imagesComing" INTO active, coming FROM fold_usage(owner) u;
        DELETE FROM user_job_starts WHERE "userId" = owner AND bucket < minute_from;
        DELETE FROM user_images_made WHERE "userId" = owner AND bucket < day_from;
        -- Qualified: images is also the argument's name.
        SELECT coalesce(sum(s.jobs), 0) INTO recent FROM user_job_starts s WHERE s."userId" = owner AND s.bucket >= minute_from;
        SELECT coalesce(sum(m.images), 0) INTO made FROM user_images_made m WHERE m."userId" = owner AND m.bucket >= day_from;
${DECIDE_IN_ORDER}
      END $$`;
