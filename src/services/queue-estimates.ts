import type { DataSource } from 'typeorm';
import { JobStatus } from '../entities';

/** Where a job stands in its queue, and when it should start and finish at the pace jobs of its type have run. */
export interface QueueEstimate {
  /** 1 for the next QUEUED job of its type to start; null once it is not QUEUED. */
  queuePosition: number | null;
  /** For a QUEUED job; null without a measured pace. */
  estimatedStartAt: Date | null;
  /** For a QUEUED or RUNNING job; null without a measured pace. */
  estimatedFinishAt: Date | null;
}

/** Finished runs of a type whose pace predicts the next: the latest this many. */
const PACE_SAMPLE = 20;

interface Row {
  id: string;
  status: JobStatus;
  steps: number;
  step: number;
  startedAt: Date | null;
  now: Date;
  position: string | null;
  stepsAhead: string | null;
  secondsPerStep: number | null;
  workers: string | null;
  stepsLeftRunning: string | null;
}

/**
 * Queue positions and estimates of jobs, in one query. A type's pace is the seconds per step of its
 * latest PACE_SAMPLE successful runs (loading included); the work ahead of a queued job is the steps
 * left of the running jobs of its type and the steps of the queued ones before it (oldest first, as
 * the queue hands them out), shared by as many workers as are running that type (at least one). A
 * running job's finish comes from its own pace once it has made a step. The queue changes as other
 * jobs start and finish, so these are as of the read.
 */
export async function queueEstimates(db: DataSource, jobIds: readonly string[]): Promise<Map<string, QueueEstimate>> {
  const rows: Row[] = await db.query(
    `WITH queued AS (
       SELECT id, row_number() OVER ahead AS position, sum(steps) OVER ahead - steps AS "stepsAhead"
         FROM job WHERE status = $2 WINDOW ahead AS (PARTITION BY type ORDER BY "createdAt", id)),
     pace AS (
       SELECT t.type, sum(extract(epoch FROM recent."finishedAt" - recent."startedAt")) / nullif(sum(recent.steps), 0) AS "secondsPerStep"
         FROM unnest(enum_range(NULL::job_type)) AS t(type)
         CROSS JOIN LATERAL (SELECT "finishedAt", "startedAt", steps FROM job
                              WHERE job.type = t.type AND status = $4 AND "startedAt" IS NOT NULL AND steps > 0
                              ORDER BY "finishedAt" DESC LIMIT $5) recent
        GROUP BY t.type),
     running AS (
       SELECT type, count(*) AS workers, sum(greatest(steps - step, 0)) AS "stepsLeftRunning" FROM job WHERE status = $3 GROUP BY type)
     SELECT job.id, job.status, job.steps, job.step, job."startedAt", now() AS now, queued.position, queued."stepsAhead",
            pace."secondsPerStep", running.workers, running."stepsLeftRunning"
       FROM job
       LEFT JOIN queued ON queued.id = job.id
       LEFT JOIN pace ON pace.type = job.type
       LEFT JOIN running ON running.type = job.type
      WHERE job.id = ANY($1)`,
    [[...jobIds], JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, PACE_SAMPLE],
  );
  return new Map(rows.map((row) => [row.id, estimate(row)]));
}

function estimate(row: Row): QueueEstimate {
  const pace = row.secondsPerStep;
  const at = (seconds: number) => new Date(row.now.getTime() + seconds * 1000);
  if (row.status === JobStatus.QUEUED) {
    const position = Number(row.position);
    if (pace == null) return { queuePosition: position, estimatedStartAt: null, estimatedFinishAt: null };
    const stepsAhead = Number(row.stepsAhead) + Number(row.stepsLeftRunning ?? 0);
    const wait = (stepsAhead * pace) / Math.max(1, Number(row.workers ?? 0));
    return { queuePosition: position, estimatedStartAt: at(wait), estimatedFinishAt: at(wait + row.steps * pace) };
  }
  if (row.status === JobStatus.RUNNING) {
    const ownPace = row.step > 0 && row.startedAt ? (row.now.getTime() - row.startedAt.getTime()) / 1000 / row.step : pace;
    const left = Math.max(row.steps - row.step, 0);
    return { queuePosition: null, estimatedStartAt: null, estimatedFinishAt: ownPace == null ? null : at(left * ownPace) };
  }
  return { queuePosition: null, estimatedStartAt: null, estimatedFinishAt: null };
}
