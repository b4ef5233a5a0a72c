import { hash, randomBytes, timingSafeEqual } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import type { DataSource, EntityManager } from 'typeorm';
import { IsNull } from 'typeorm';
import { z } from 'zod';
import { ApiKey, type User } from '../entities';
import { notFound, unauthenticated } from './errors';
import { pageOf, type Page, type PageRequest } from './pagination';
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
  // One-shot: a Hash object is a native handle that each young-generation collection visits (bench/RESULTS.md).
  return hash('sha256', key, 'hex');
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

/** A page of the user's keys, revoked ones too, newest first. */
export function listKeys(db: DataSource, user: User, page: PageRequest): Promise<Page<ApiKey>> {
  return pageOf(db.getRepository(ApiKey).createQueryBuilder('key').where('key.userId = :user', { user: user.id }), page);
}

/** Something that changes what a key authenticates: one key (revoked), or every key of a user (role changed). */
export type KeyChange = { keyId: string } | { userId: string };

/** The PostgreSQL channel key changes are announced on, so every process's KeyCache drops what it trusted. */
const KEY_CHANNEL = 'api_key_changes';

/** Announces `change` to every process; inside a transaction it is delivered only on commit. */
export async function announceKeyChange(db: DataSource | EntityManager, change: KeyChange): Promise<void> {
  await db.query('SELECT pg_notify($1, $2)', [KEY_CHANNEL, JSON.stringify(change)]);
}

/** Revokes one of the user's keys; revoking twice keeps the first time. Every process refuses it from then on. */
export async function revokeKey(db: DataSource, keys: KeyCache, user: User, id: string): Promise<ApiKey> {
  const repo = db.getRepository(ApiKey);
  const apiKey = await repo.findOneBy({ id: parseId(id), userId: user.id });
  if (!apiKey) throw notFound('API key');
  if (!apiKey.revokedAt) {
    await db.transaction(async (tx) => {
      await tx.getRepository(ApiKey).update({ id: apiKey.id, revokedAt: IsNull() }, { revokedAt: new Date() });
      await announceKeyChange(tx, { keyId: apiKey.id });
    });
    keys.forget({ keyId: apiKey.id }); // this process at once, before the notification comes back
  }
  return repo.findOneByOrFail({ id: apiKey.id });
}

/** What checking a key found: the user it speaks for, or why it is refused. */
type Verdict = { user: User; keyId: string; lastUsedAt: number | null } | { refused: string; keyId: string | null; userId?: string };

/** How long a verdict is trusted without asking the database; announced changes apply at once. */
const TRUST_MS = 60_000;
/** Verdicts kept (the oldest go first): valid keys in use, and the bad keys a client keeps sending. */
const MAX_VERDICTS = 10_000;
const RECONNECT_DELAY_MS = 1000;

/**
 * Authenticates requests, remembering each key's verdict for a short while in this process, so a
 * request (with a valid key or a bad one) costs no SQL. Verdicts are trusted only while this process
 * listens for key changes (revocations, role changes) on PostgreSQL NOTIFY; until then, and after a
 * lost connection (when everything remembered is dropped), every request asks the database.
 */
export class KeyCache {
  readonly #verdicts = new Map<string, { verdict: Verdict; at: number }>();
  /** Counts forgets, so a verdict read before a change is not remembered after it. */
  #changes = 0;
  #listener: pg.Client | null = null;
  #connecting: Promise<void> | null = null;
  #closed = false;

  constructor(
    private readonly db: DataSource,
    private readonly databaseUrl: string,
    private readonly log: Logger,
  ) {}

  /**
   * The user an `Authorization` header value speaks for: undefined when absent; an UNAUTHENTICATED
   * error when malformed, unknown or revoked (a bad key is refused, never treated as anonymous).
   */
  async authenticate(header: string | undefined): Promise<User | undefined> {
    if (header === undefined || header === '') return undefined;
    const key = /^Bearer (\S+)$/.exec(header)?.[1];
    const prefix = key && KEY_PATTERN.exec(key)?.[1];
    if (!key || !prefix) throw unauthenticated('Malformed API key: expected "Bearer bd_..."');
    const keyHash = hashKey(key);
    const remembered = this.#verdicts.get(keyHash);
    let verdict: Verdict;
    if (remembered && Date.now() - remembered.at < TRUST_MS) {
      verdict = remembered.verdict;
    } else {
      const changes = this.#changes;
      verdict = await this.#check(prefix, keyHash);
      if (this.#listening() && changes === this.#changes) this.#remember(keyHash, verdict);
    }
    if ('refused' in verdict) throw unauthenticated(verdict.refused);
    await this.#touch(verdict);
    return verdict.user;
  }

  /** Drops what this process trusted about a key or a user's keys. */
  forget(change: KeyChange): void {
    this.#changes++;
    for (const [keyHash, { verdict }] of this.#verdicts) {
      const matches = 'keyId' in change ? verdict.keyId === change.keyId : ('user' in verdict ? verdict.user.id : verdict.userId) === change.userId;
      if (matches) this.#verdicts.delete(keyHash);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#verdicts.clear();
    await this.#listener?.end().catch(() => {});
    this.#listener = null;
  }

  async #check(prefix: string, keyHash: string): Promise<Verdict> {
    const apiKey = await this.db.getRepository(ApiKey).findOne({ where: { prefix }, relations: { user: true } });
    const matches = apiKey !== null && timingSafeEqual(Buffer.from(apiKey.secretHash, 'hex'), Buffer.from(keyHash, 'hex'));
    if (!apiKey || !matches || !apiKey.user) return { refused: 'Unknown API key', keyId: null };
    if (apiKey.revokedAt) return { refused: 'This API key has been revoked', keyId: apiKey.id };
    // The user's id too, so enabling the account again is a change this verdict hears of.
    if (apiKey.user.disabledAt) return { refused: 'This account is disabled', keyId: apiKey.id, userId: apiKey.userId };
    return { user: apiKey.user, keyId: apiKey.id, lastUsedAt: apiKey.lastUsedAt?.getTime() ?? null };
  }

  #remember(hash: string, verdict: Verdict): void {
    this.#verdicts.delete(hash);
    this.#verdicts.set(hash, { verdict, at: Date.now() });
    for (const oldest of this.#verdicts.keys()) {
      if (this.#verdicts.size <= MAX_VERDICTS) break;
      this.#verdicts.delete(oldest);
    }
  }

  /**
   * lastUsedAt is a hint for the user, not an audit log: at most one write per key per minute. It is
   * written before the request runs, so the request itself (listing its keys) sees it.
   */
  async #touch(verdict: Extract<Verdict, { user: User }>): Promise<void> {
    const now = Date.now();
    if (verdict.lastUsedAt !== null && now - verdict.lastUsedAt <= LAST_USED_RESOLUTION_MS) return;
    verdict.lastUsedAt = now;
    await this.db.getRepository(ApiKey).update(verdict.keyId, { lastUsedAt: new Date(now) });
  }

  /** True once key changes reach this process; starts listening on first use, and again after a lost connection. */
  #listening(): boolean {
    if (this.#listener) return true;
    if (!this.#connecting && !this.#closed) {
      this.#connecting = this.#connect().then(
        () => {
          this.#connecting = null;
        },
        (error) => {
          this.log.warn({ err: error }, 'listening for API key changes failed; keys are checked in the database meanwhile');
          setTimeout(() => (this.#connecting = null), RECONNECT_DELAY_MS).unref();
        },
      );
    }
    return false;
  }

  async #connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.databaseUrl });
    client.on('notification', ({ payload }) => {
      try {
        this.forget(JSON.parse(payload ?? '') as KeyChange);
      } catch (error) {
        this.log.warn({ err: error, payload }, 'ignoring a malformed API key change');
      }
    });
    client.on('error', (error) => {
      this.log.error({ err: error }, 'API key change listener lost');
      void client.end().catch(() => {});
      if (this.#listener !== client) return;
      this.#listener = null; // verdicts may have missed a change: trust none of them
      this.#changes++;
      this.#verdicts.clear();
    });
    await client.connect();
    await client.query(`LISTEN ${KEY_CHANNEL}`);
    if (this.#closed) {
      await client.end();
      return;
    }
    this.#listener = client;
  }
}
