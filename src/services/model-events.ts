import type { EntityManager } from 'typeorm';

/** The PostgreSQL channel every model's events are announced on. */
export const MODEL_EVENTS_CHANNEL = 'model_events';

/** What happened to a model (`modelUpdated`): the steps of a contribution, and its versions. */
export enum ModelEventType {
  /** A fine-tune of the model was queued: a new contribution waits. */
  CONTRIBUTION_QUEUED = 'CONTRIBUTION_QUEUED',
  /** A worker started training a contribution. */
  TRAINING = 'TRAINING',
  /** A contribution's fine-tune failed or was canceled: it will not merge. */
  CONTRIBUTION_FAILED = 'CONTRIBUTION_FAILED',
  /** A contribution's training merged: a new version is the head. */
  VERSION_APPENDED = 'VERSION_APPENDED',
  /** A contribution (and those after it) was reverted: a new version with the weights from before it is the head. */
  REVERTED = 'REVERTED',
  /** A concept was withdrawn by its contributor: a new version is the head. */
  WITHDRAWN = 'WITHDRAWN',
}

export interface ModelEvent {
  modelId: string;
  type: ModelEventType;
  contributionId: string | null;
  /** The version the event made the head (VERSION_APPENDED, REVERTED, WITHDRAWN). */
  versionId: string | null;
  /** The fine-tune's job (CONTRIBUTION_QUEUED, TRAINING, CONTRIBUTION_FAILED, VERSION_APPENDED). */
  jobId: string | null;
  /** When it happened: the transaction's time. */
  at: string;
}

/**
 * Announces an event of a model to every process's `modelUpdated` subscribers, from inside the transaction
 * `tx` that made it: NOTIFY delivers at commit, so an event is heard exactly when its change is there to read.
 */
export async function publishModelEvent(tx: EntityManager, event: Omit<ModelEvent, 'at'>): Promise<void> {
  if (!tx.queryRunner?.isTransactionActive) throw new Error('publishModelEvent runs inside the transaction that changed the model');
  await tx.query(`SELECT pg_notify($1, json_build_object('event', $2::jsonb || jsonb_build_object('at', now()))::text)`, [
    MODEL_EVENTS_CHANNEL, JSON.stringify(event),
  ]);
}
