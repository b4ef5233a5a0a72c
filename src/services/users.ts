import type { DataSource } from 'typeorm';
import { z } from 'zod';
import { Role, User } from '../entities';
import { announceKeyChange, issueKey, type IssuedKey } from './api-keys';
import { conflict, forbidden } from './errors';
import { pageOf, whereCreated, type CreatedFilter, type Page, type PageRequest } from './pagination';
import { parseInput } from './validate';

// Deliberately loose (local@domain.tld): only a confirmation mail could prove an address anyway.
const email = z
  .string()
  .trim()
  .max(320, 'must be at most 320 characters')
  .regex(/^[^\s@]+@[^\s@]+\.[^\s@]+$/, 'must be an email address')
  .transform((value) => value.toLowerCase());

export interface NewAccount extends IssuedKey {
  user: User;
}

export interface UserFilter extends CreatedFilter {
  role?: Role | null;
}

/** A page of the accounts, newest first (admins only: the resolver checks). */
export function listUsers(db: DataSource, filter: UserFilter, page: PageRequest): Promise<Page<User>> {
  const query = whereCreated(db.getRepository(User).createQueryBuilder('user'), filter);
  if (filter.role) query.andWhere('user.role = :role', { role: filter.role });
  return pageOf(query, page);
}

/** Self-service sign-up: a USER account and its first API key. */
export async function signUp(db: DataSource, signupEnabled: boolean, address: string): Promise<NewAccount> {
  if (!signupEnabled) throw forbidden('Sign-up is disabled on this server');
  return createAccount(db, parseInput(email, address, 'email'), Role.USER, 'default');
}

/** An ADMIN account with a key (`npm run admin:create`); an existing user with that email is promoted. */
export async function createAdmin(db: DataSource, address: string): Promise<NewAccount> {
  const normalized = parseInput(email, address, 'email');
  const users = db.getRepository(User);
  const existing = await users.findOneBy({ email: normalized });
  if (!existing) return createAccount(db, normalized, Role.ADMIN, ADMIN_KEY_NAME);
  await db.transaction(async (tx) => {
    await tx.getRepository(User).update(existing.id, { role: Role.ADMIN });
    await announceKeyChange(tx, { userId: existing.id });
  });
  const user = await users.findOneByOrFail({ id: existing.id });
  return { user, ...(await issueKey(db, user, ADMIN_KEY_NAME)) };
}

const ADMIN_KEY_NAME = 'admin:create';

async function createAccount(db: DataSource, address: string, role: Role, keyName: string): Promise<NewAccount> {
  return db.transaction(async (tx) => {
    const users = tx.getRepository(User);
    // ON CONFLICT DO NOTHING makes concurrent sign-ups with one email a clean CONFLICT.
    const inserted = await users
      .createQueryBuilder()
      .insert()
      .values({ email: address, role })
      .orIgnore()
      .returning('id')
      .execute();
    const id = inserted.raw[0]?.id as string | undefined;
    if (!id) throw conflict('An account with this email already exists');
    const user = await users.findOneByOrFail({ id });
    return { user, ...(await issueKey(tx, user, keyName)) };
  });
}
