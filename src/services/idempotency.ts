import { createHash } from 'node:crypto';
import { stringify } from 'safe-stable-stringify';
import { z } from 'zod';
import type { User } from '../entities';
import type { Services } from './container';
import { conflict } from './errors';
import { parseInput } from './validate';

/** The API's words for the `idempotencyKey` of each mutation that takes one. */
export const IDEMPOTENCY_KEY_DESCRIPTION =
  'Any string of 1-255 characters, unique per request: a retry with the same key returns the object the first request made (for 24 h by default) instead of making another; the same key with different arguments is a CONFLICT.';

const idempotencyKey = z.string().min(1, 'must not be empty').max(255, 'must be at most 255 characters');

/** A request that has been claimed but not finished this long ago is taken as abandoned (its process died). */
const ABANDONED_AFTER = "interval '5 minutes'";

export interface IdempotentRequest {
  /** The client's key; absent: the request simply runs. */
  key: string | null | undefined;
  /** The mutation: one key names one request of one mutation. */
  operation: string;
  /** Its arguments, but the key; compared by a hash of their canonical JSON. */
  request: unknown;
}

/** What an idempotent request makes, how its id is read, and how it is read again by that id. */
export interface IdempotentResult<T> {
  create: () => Promise<T>;
  idOf: (made: T) => string;
  load: (id: string) => Promise<T>;
}

/**
 * Runs `create` once per user and key. The first request claims the key (a row with no result), makes
 * its object, and records the object's id; a retry with the same key and arguments then gets that
 * object again through `load`, until the key expires (IDEMPOTENCY_KEY_TTL_HOURS). The same key with
 * other arguments, or while the first request is still running, is a CONFLICT. A request that fails
 * gives its key up, so a retry runs again (nothing was made). A process that dies while making its
 * object leaves its key claimed for ABANDONED_AFTER, then the key is free again.
 */
export async function idempotent<T>(
  { db, config }: Pick<Services, 'db' | 'config'>,
  user: User,
  { key, operation, request }: IdempotentRequest,
  { create, idOf, load }: IdempotentResult<T>,
): Promise<T> {
  if (key == null) return create();
  const name = parseInput(idempotencyKey, key, 'idempotencyKey');
  const requestHash = createHash('sha256').update(stringify({ operation, request }) ?? '').digest('hex');

  await db.query(`DELETE FROM idempotency_key WHERE "userId" = $1 AND "expiresAt" <= now()`, [user.id]);
  const [claimed] = await db.query(
    `INSERT INTO idempotency_key ("userId", key, operation, "requestHash", "resultId", "expiresAt")
     VALUES ($1, $2, $3, $4, NULL, now() + make_interval(hours => $5))
     ON CONFLICT ("userId", key) DO UPDATE
       SET operation = EXCLUDED.operation, "requestHash" = EXCLUDED."requestHash", "createdAt" = now(), "expiresAt" = EXCLUDED."expiresAt"
       WHERE idempotency_key."resultId" IS NULL AND idempotency_key."createdAt" < now() - ${ABANDONED_AFTER}
     RETURNING 1`,
    [user.id, name, operation, requestHash, config.idempotencyKeyTtlHours],
  );
  if (!claimed) {
    const [first]: { operation: string; requestHash: string; resultId: string | null }[] = await db.query(
      `SELECT operation, "requestHash", "resultId" FROM idempotency_key WHERE "userId" = $1 AND key = $2`,
      [user.id, name],
    );
    // Gone since: the first request failed and gave the key up; this one may run.
    if (!first) return idempotent({ db, config }, user, { key, operation, request }, { create, idOf, load });
    if (first.operation !== operation || first.requestHash !== requestHash) {
      throw conflict('idempotencyKey: this key was used for a different request; use a new key for a new request');
    }
    if (!first.resultId) throw conflict('idempotencyKey: the first request with this key is still running; retry shortly');
    return load(first.resultId);
  }

  let made: T;
  try {
    made = await create();
  } catch (error) {
    await db.query(`DELETE FROM idempotency_key WHERE "userId" = $1 AND key = $2 AND "resultId" IS NULL`, [user.id, name]);
    throw error;
  }
  await db.query(`UPDATE idempotency_key SET "resultId" = $3 WHERE "userId" = $1 AND key = $2`, [user.id, name, idOf(made)]);
  return made;
}
