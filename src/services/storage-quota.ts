import type { DataSource, EntityManager } from 'typeorm';
import { quotaExceeded, type AppError } from './errors';

/**
 * What a user keeps in object storage: their training photos, the images their jobs made (previews
 * included) and the weights of the versions of the models they own. Each row records its object's size
 * when it is written, and triggers count it for its owner in user_usage_now (migration UsageCounters says how).
 * Weight exports are not counted: they are gone within the hour.
 */
const STORED_BYTES = 'SELECT "userId", "storedBytes" AS bytes FROM user_usage_now WHERE "userId" = ANY($1)';

/** Bytes each user keeps in storage, by user id, in one query that only reads. */
export async function storedBytesOf(db: DataSource | EntityManager, userIds: readonly string[]): Promise<Map<string, number>> {
  const rows: { userId: string; bytes: string }[] = await db.query(STORED_BYTES, [[...userIds]]);
  return new Map(rows.map((row) => [row.userId, Number(row.bytes)]));
}

/**
 * Bytes the user keeps in storage, read by a writer about to add some: their counters' committed changes
 * are folded in first (fold_usage()), under a lock on the user's counters held until `db`'s transaction
 * commits, so that they stay few.
 */
export async function storedBytesToAdd(db: DataSource | EntityManager, userId: string): Promise<number> {
  const [row]: { storedBytes: string }[] = await db.query('SELECT "storedBytes" FROM fold_usage($1)', [userId]);
  return Number(row.storedBytes);
}

/**
 * Refuses (QUOTA_EXCEEDED) what would take the user's stored bytes past `limit`: `adding` bytes more, exact
 * for an upload, an estimate for a job's results. Nothing is written when it refuses.
 */
export async function admitStorage(db: DataSource | EntityManager, userId: string, limit: number, adding: number): Promise<void> {
  const refused = storageRefusal(await storedBytesToAdd(db, userId), adding, limit);
  if (refused) throw refused;
}

/** The refusal of `adding` bytes to the `stored` ones, when they would pass `limit`. */
export function storageRefusal(stored: number, adding: number, limit: number): AppError | null {
  if (stored + adding <= limit) return null;
  return quotaExceeded(`You keep ${stored} bytes in storage; ${adding} more would pass the ${limit} allowed: delete images, photos or models first`);
}
