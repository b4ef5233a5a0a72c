import type { ObjectLiteral, SelectQueryBuilder } from 'typeorm';
import { z } from 'zod';
import { badInput } from './errors';
import { parseInput } from './validate';

/** A page of a list, newest first: at most `first` rows after the row a cursor names. */
export interface PageRequest {
  /** 1 to 100; default 20. */
  first?: number | null;
  /** The `endCursor` of the page before; absent: from the newest. */
  after?: string | null;
}

export interface Page<T> {
  nodes: T[];
  /** Each node's cursor, for a client that resumes after any of them. */
  cursors: string[];
  hasNextPage: boolean;
  /** Rows in the whole list (all pages, filters applied): counted only when asked for, a page costs no count. */
  countAll(): Promise<number>;
}

export const MAX_PAGE_SIZE = 100;
const DEFAULT_PAGE_SIZE = 20;
const pageSize = z.number().int().min(1, 'must be at least 1').max(MAX_PAGE_SIZE, `must be at most ${MAX_PAGE_SIZE}`);

/** Cursors are opaque to clients: the row's id, encoded, so lists may change how they order without breaking them. */
const toCursor = (id: string) => Buffer.from(id).toString('base64url');

function fromCursor(cursor: string): string {
  const id = Buffer.from(cursor, 'base64url').toString();
  if (!z.uuid().safeParse(id).success) throw badInput('after: not a cursor of this list');
  return id;
}

/**
 * One page of `query` (rows of a table with `id` and `createdAt`, filters applied), newest first.
 * Keyset pagination: a page after a cursor starts below that row's (createdAt, id), so pages stay
 * consistent while new rows arrive, and the cost does not grow with how deep the page is.
 */
export async function pageOf<T extends ObjectLiteral & { id: string }>(query: SelectQueryBuilder<T>, request: PageRequest): Promise<Page<T>> {
  const first = parseInput(pageSize, request.first ?? DEFAULT_PAGE_SIZE, 'first');
  const alias = query.alias;
  const table = query.expressionMap.mainAlias!.metadata.tableName;
  const counting = query.clone();
  if (request.after != null) {
    query.andWhere(`(${alias}."createdAt", ${alias}.id) < (SELECT "createdAt", id FROM "${table}" WHERE id = :after)`, { after: fromCursor(request.after) });
  }
  const rows = await query.orderBy(`${alias}.createdAt`, 'DESC').addOrderBy(`${alias}.id`, 'DESC').limit(first + 1).getMany();
  const nodes = rows.slice(0, first);
  return { nodes, cursors: nodes.map((node) => toCursor(node.id)), hasNextPage: rows.length > first, countAll: () => counting.getCount() };
}
