import { Role, type User } from '../entities';
import { forbidden, unauthenticated } from './errors';
import { parseId } from './validate';

/** Who is asking: the user behind the request's API key, or nobody. */
export type Viewer = User | null;

export function requireUser(viewer: Viewer): User {
  if (!viewer) throw unauthenticated();
  return viewer;
}

export function requireAdmin(viewer: Viewer): User {
  const user = requireUser(viewer);
  if (user.role !== Role.ADMIN) throw forbidden('Only administrators may do this');
  return user;
}

export const isAdmin = (user: User): boolean => user.role === Role.ADMIN;

/** A list's owner filter: any user's id for an admin, only your own for anyone else (FORBIDDEN). */
export function ownerFilter(user: User, ownerId: string): string {
  const id = parseId(ownerId, 'ownerId');
  if (id !== user.id && !isAdmin(user)) throw forbidden('Only administrators list others’ jobs and models');
  return id;
}
