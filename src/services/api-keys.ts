import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { DataSource, EntityManager } from 'typeorm';
import { IsNull } from 'typeorm';
import { z } from 'zod';
import { ApiKey, type User } from '../entities';
import { notFound, unauthenticated } from './errors';
import { parseId, parseInput } from './validate';

/**
 * Keys look like `bd_<prefix>_<secret>`: the prefix (8 chars) is stored and shown to tell keys apart,
 * the secret (43 chars, 256 bits) is shown once; only the SHA-256 of the whole key is kept.
 */
const KEY_PATTERN = /^(bd_[A-Za-z0-9]{8})_[A-Za-z0-9_-]{43}$/;
const PREFIX_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** lastUsedAt is a hint for the user, not an audit log: at most one write per key per minute. */
const LAST_USED_RESOLUTION_MS = 60_000;

const keyName = z.string().trim().min(1, 'must not be empty').max(100, 'must be at most 100 characters');

export interface IssuedKey {
  apiKey: ApiKey;
  /** The full key; exists only in this response. */
  secret: string;
}

export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

function newKey(): { key: string; prefix: string } {
  const prefix = `bd_${Array.from(randomBytes(8), (b) => PREFIX_ALPHABET[b % PREFIX_ALPHABET.length]).join('')}`;
  return { prefix, key: `${prefix}_${randomBytes(32).toString('base64url')}` };
}

export async function issueKey(db: DataSource | EntityManager, user: User, name: string): Promise<IssuedKey> {
  const { key, prefix } = newKey();
  const apiKey = await db.getRepository(ApiKey).save(
    db.getRepository(ApiKey).create({
      userId: user.id,
      name: parseInput(keyName, name, 'name'),
      prefix,
      secretHash: hashKey(key),
      lastUsedAt: null,
      revokedAt: null,
    }),
  );
  return { apiKey, secret: key };
}

export function listKeys(db: DataSource, user: User): Promise<ApiKey[]> {
  return db.getRepository(ApiKey).find({ where: { userId: user.id }, order: { createdAt: 'ASC' } });
}

/** Revokes one of the user's keys; revoking twice keeps the first time. */
export async function revokeKey(db: DataSource, user: User, id: string): Promise<ApiKey> {
  const repo = db.getRepository(ApiKey);
  const apiKey = await repo.findOneBy({ id: parseId(id), userId: user.id });
  if (!apiKey) throw notFound('API key');
  if (!apiKey.revokedAt) {
    await repo.update({ id: apiKey.id, revokedAt: IsNull() }, { revokedAt: new Date() });
  }
  return repo.findOneByOrFail({ id: apiKey.id });
}

/**
 * The user an `Authorization` header value speaks for: undefined when absent; an UNAUTHENTICATED
 * error when malformed, unknown or revoked (a bad key is refused, never treated as anonymous).
 */
export async function authenticate(db: DataSource, header: string | undefined): Promise<User | undefined> {
  if (header === undefined || header === '') return undefined;
  const key = /^Bearer (\S+)$/.exec(header)?.[1];
  const prefix = key && KEY_PATTERN.exec(key)?.[1];
  if (!key || !prefix) throw unauthenticated('Malformed API key: expected "Bearer bd_..."');

  const apiKey = await db.getRepository(ApiKey).findOne({ where: { prefix }, relations: { user: true } });
  const matches =
    apiKey !== null && timingSafeEqual(Buffer.from(apiKey.secretHash, 'hex'), Buffer.from(hashKey(key), 'hex'));
  if (!apiKey || !matches || !apiKey.user) throw unauthenticated('Unknown API key');
  if (apiKey.revokedAt) throw unauthenticated('This API key has been revoked');

  const now = Date.now();
  if (!apiKey.lastUsedAt || now - apiKey.lastUsedAt.getTime() > LAST_USED_RESOLUTION_MS) {
    await db.getRepository(ApiKey).update(apiKey.id, { lastUsedAt: new Date(now) });
  }
  return apiKey.user;
}
