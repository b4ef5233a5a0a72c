import { randomBytes } from 'node:crypto';
import type { DataSource, EntityManager } from 'typeorm';
import { z } from 'zod';
import type { WebhookConfig } from '../config';
import { JobStatus, JobWebhook, WebhookDelivery, WebhookEvent, WebhookSettings, type User, type WebhookTarget } from '../entities';
import { imagePath } from './images';
import { FINISHED } from './job-lifecycle';
import { JOB_STATE_JSON, type JobState } from './job-state';
import { parseInput } from './validate';
import { checkWebhookUrl } from './webhook-urls';

/**
 * Webhooks tell a URL what happens to a job, as Standard Webhooks do: each event is a delivery in an
 * outbox table, written in the transaction that changed the job (so an event exists exactly when its
 * change committed, and survives any restart), then sent, signed with the owner's secret, and retried
 * by the dispatcher (webhook-delivery.ts). A job has its own webhook or, submitted without one, its
 * owner's default.
 */

/** PROGRESS at most this often when the webhook names no interval. */
const DEFAULT_PROGRESS_SECONDS = 5;

export const WebhookTargetInput = z.object({
  url: z.string(),
  events: z.array(z.enum(WebhookEvent)).min(1, 'must name at least one event').nullish(),
  progressEverySteps: z.number().int().min(1, 'must be at least 1').nullish(),
  progressEverySeconds: z.number().min(0.1, 'must be at least 0.1').max(86_400, 'must be at most 86400').nullish(),
});
export type WebhookTargetInput = z.input<typeof WebhookTargetInput>;

/** A webhook as given (a job's, or a default), checked: its URL must resolve to public addresses (webhook-urls.ts). */
export async function parseTarget(input: WebhookTargetInput, config: WebhookConfig, field: string): Promise<WebhookTarget> {
  const request = parseInput(WebhookTargetInput, input, field);
  const everySteps = request.progressEverySteps ?? null;
  return {
    url: await checkWebhookUrl(request.url, config.allowPrivateNetworks, `${field}.url`),
    events: [...new Set(request.events ?? Object.values(WebhookEvent))],
    progressEverySteps: everySteps,
    progressEverySeconds: request.progressEverySeconds ?? (everySteps ? null : DEFAULT_PROGRESS_SECONDS),
  };
}

/** The webhook a new job gets: the one it was submitted with, else its owner's default, else none. */
export async function jobWebhookTarget(
  db: DataSource,
  user: User,
  input: WebhookTargetInput | null | undefined,
  config: WebhookConfig,
): Promise<WebhookTarget | null> {
  return input ? parseTarget(input, config, 'webhook') : defaultWebhookTarget(db, user.id);
}

/** The user's default webhook for new jobs, if they set one. */
export async function defaultWebhookTarget(db: DataSource | EntityManager, userId: string): Promise<WebhookTarget | null> {
  const settings = await db.getRepository(WebhookSettings).findOneBy({ userId });
  return settings?.defaultTarget ?? null;
}

/** Gives a job being created in `tx` its webhook, and its owner a signing secret if they had none. */
export async function attachJobWebhook(tx: EntityManager, jobId: string, ownerId: string, target: WebhookTarget | null): Promise<void> {
  if (!target) return;
  await ensureSettings(tx, ownerId);
  await tx.getRepository(JobWebhook).insert({ jobId, target });
}

/** Standard Webhooks secrets: `whsec_` and the base64 of a random HMAC key. */
const newSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

async function ensureSettings(db: DataSource | EntityManager, userId: string): Promise<void> {
  await db.getRepository(WebhookSettings).createQueryBuilder().insert().values({ userId, secret: newSecret(), defaultTarget: null }).orIgnore().execute();
}

/** The user's secret and default webhook; the secret is made on first ask. */
export async function getWebhookSettings(db: DataSource, user: User): Promise<WebhookSettings> {
  await ensureSettings(db, user.id);
  return db.getRepository(WebhookSettings).findOneByOrFail({ userId: user.id });
}

/** Sets (or with null, clears) the webhook of the user's jobs submitted without one. */
export async function setWebhookDefault(db: DataSource, user: User, input: WebhookTargetInput | null, config: WebhookConfig): Promise<WebhookSettings> {
  const target = input ? await parseTarget(input, config, 'input') : null;
  await ensureSettings(db, user.id);
  await db.getRepository(WebhookSettings).update({ userId: user.id }, { defaultTarget: target });
  return db.getRepository(WebhookSettings).findOneByOrFail({ userId: user.id });
}

/** A new secret; attempts from now on are signed with it, whenever their event happened. */
export async function rotateWebhookSecret(db: DataSource, user: User): Promise<WebhookSettings> {
  await ensureSettings(db, user.id);
  await db.getRepository(WebhookSettings).update({ userId: user.id }, { secret: newSecret() });
  return db.getRepository(WebhookSettings).findOneByOrFail({ userId: user.id });
}

interface WebhookEventBody {
  type: string;
  timestamp: string;
  data: Record<string, unknown>;
}

/**
 * Writes the deliveries a job's new state means, in `tx`, the transaction that made the state (see
 * publishJobState): `job.started` when it starts running (again, after a requeue); `job.progress`
 * once the webhook's step or time interval has passed since the last; on success one `job.image` per
 * image, in order; and `job.completed` when it finishes. The job's webhook row remembers the status
 * and progress it last told, so each change is told once.
 */
export async function enqueueJobWebhookEvents(tx: EntityManager, jobId: string): Promise<void> {
  const hook = await tx.getRepository(JobWebhook).findOneByOrFail({ jobId });
  const [{ ownerId, now, state }]: { ownerId: string; now: Date; state: JobState }[] = await tx.query(
    `SELECT job."ownerId", now() AS now, ${JOB_STATE_JSON} AS state FROM job WHERE job.id = $1`,
    [jobId],
  );
  const { target } = hook;
  const wants = (event: WebhookEvent) => target.events.includes(event);
  const events: WebhookEventBody[] = [];
  const tell = (type: string, data: Record<string, unknown>) => events.push({ type, timestamp: now.toISOString(), data });
  let { lastProgressStep, lastProgressAt } = hook;

  if (state.status === JobStatus.RUNNING && hook.lastStatus !== JobStatus.RUNNING) {
    if (wants(WebhookEvent.STARTED)) tell('job.started', { ...state });
    lastProgressStep = state.step;
    lastProgressAt = now;
  } else if (state.status === JobStatus.RUNNING && wants(WebhookEvent.PROGRESS) && progressDue(target, state.step - lastProgressStep, lastProgressAt, now)) {
    tell('job.progress', { ...state });
    lastProgressStep = state.step;
    lastProgressAt = now;
  } else if (FINISHED.includes(state.status)) {
    if (state.status === JobStatus.SUCCEEDED && wants(WebhookEvent.IMAGE)) {
      state.imageIds.forEach((imageId, index) => tell('job.image', { jobId: state.jobId, imageId, index, url: imagePath(imageId) }));
    }
    if (wants(WebhookEvent.COMPLETED)) tell('job.completed', { ...state });
  }

  await tx.getRepository(JobWebhook).update({ jobId: state.jobId }, { lastStatus: state.status, lastProgressStep, lastProgressAt });
  if (events.length) {
    await tx.getRepository(WebhookDelivery).insert(events.map((event) => ({ ownerId, jobId: state.jobId, type: event.type, url: target.url, body: JSON.stringify(event) })));
  }
}

/** Writes a fine-tune's `job.preview` delivery for its previews of `step`, in `tx`, when its webhook wants them. */
export async function enqueuePreviewWebhookEvent(tx: EntityManager, jobId: string, step: number, images: { imageId: string; prompt: string }[]): Promise<void> {
  const hook = await tx.getRepository(JobWebhook).findOneBy({ jobId });
  if (!hook?.target.events.includes(WebhookEvent.PREVIEW)) return;
  const [{ ownerId, now }]: { ownerId: string; now: Date }[] = await tx.query('SELECT "ownerId", now() AS now FROM job WHERE id = $1', [jobId]);
  const event: WebhookEventBody = {
    type: 'job.preview',
    timestamp: now.toISOString(),
    data: { jobId, step, images: images.map(({ imageId, prompt }) => ({ imageId, prompt, url: imagePath(imageId) })) },
  };
  await tx.getRepository(WebhookDelivery).insert({ ownerId, jobId, type: event.type, url: hook.target.url, body: JSON.stringify(event) });
}

function progressDue(target: WebhookTarget, stepsSince: number, lastAt: Date | null, now: Date): boolean {
  if (stepsSince <= 0) return false;
  if (target.progressEverySteps && stepsSince >= target.progressEverySteps) return true;
  return Boolean(target.progressEverySeconds && (!lastAt || now.getTime() - lastAt.getTime() >= target.progressEverySeconds * 1000));
}
