import type { DataSource, EntityManager } from 'typeorm';
import { Image } from '../entities';
import { badInput } from './errors';
import { enqueuePreviewWebhookEvent } from './webhooks';

/**
 * A fine-tune's previews: its validation prompts drawn every few training steps with the weights being
 * trained, so a client watches the subject appear (and stops a run that overfits). They are images of
 * the job (`previewStep` set), told to subscribers in the job's state and to webhooks as `job.preview`.
 */

/** Prompts a fine-tune may preview: each round draws one image per prompt. */
export const MAX_PREVIEW_PROMPTS = 4;
/** Images a fine-tune's previews may make in all (rounds x prompts). */
export const MAX_PREVIEW_IMAGES = 100;
/** Denoising steps of a preview unless asked otherwise: few, so previews cost little next to the training. */
export const DEFAULT_PREVIEW_STEPS = 10;
export const MAX_PREVIEW_STEPS = 50;
/** Preview rounds when the request names prompts but no interval. */
const DEFAULT_PREVIEW_ROUNDS = 4;

/** How a fine-tune previews, as its job's params record it. */
export interface PreviewSettings {
  prompts: string[];
  /** Training steps between previews: drawn after steps every, 2 x every, ... up to the last. */
  every: number;
  /** Denoising steps of each preview image. */
  steps: number;
}

/**
 * The preview settings of a fine-tune of `trainingSteps` steps, from its request (already checked field by
 * field); null without prompts. Too many preview images in all is BAD_USER_INPUT.
 */
export function previewSettings(
  request: { previewPrompts?: string[] | null; previewEvery?: number | null; previewSteps?: number | null },
  trainingSteps: number,
): PreviewSettings | null {
  const prompts = request.previewPrompts ?? [];
  if (!prompts.length) {
    if (request.previewEvery != null || request.previewSteps != null) throw badInput('previewPrompts: previewEvery and previewSteps need prompts to draw');
    return null;
  }
  const every = request.previewEvery ?? Math.max(1, Math.ceil(trainingSteps / DEFAULT_PREVIEW_ROUNDS));
  const images = Math.floor(trainingSteps / every) * prompts.length;
  if (images > MAX_PREVIEW_IMAGES) {
    throw badInput(`previewEvery: ${prompts.length} prompt(s) every ${every} of ${trainingSteps} steps make ${images} previews, more than the ${MAX_PREVIEW_IMAGES} allowed`);
  }
  return { prompts, every, steps: request.previewSteps ?? DEFAULT_PREVIEW_STEPS };
}

/** How many preview images the settings make over a run of `trainingSteps`. */
export function previewCount(settings: PreviewSettings | null, trainingSteps: number): number {
  return settings ? Math.floor(trainingSteps / settings.every) * settings.prompts.length : 0;
}

/** Whether the job already has its previews of `step` (drawn before its worker stopped and it resumed). */
export function hasPreviews(db: DataSource, jobId: string, step: number): Promise<boolean> {
  return db.getRepository(Image).existsBy({ jobId, previewStep: step });
}

export interface StoredPreview {
  objectKey: string;
  bytes: number;
  prompt: string;
  seed: number;
  width: number;
  height: number;
}

/** Records the previews of `step`, stored in prompt order, in `tx` (the running job's: see recordForRun), and their webhook event. */
export async function recordPreviews(tx: EntityManager, jobId: string, step: number, previews: StoredPreview[]): Promise<void> {
  const { identifiers } = await tx.getRepository(Image).insert(previews.map((preview) => ({ ...preview, jobId, previewStep: step })));
  const ids = identifiers.map((row) => row.id as string);
  await enqueuePreviewWebhookEvent(tx, jobId, step, previews.map((preview, i) => ({ imageId: ids[i], prompt: preview.prompt })));
}
