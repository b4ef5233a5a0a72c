import type { ObjectLiteral, SelectQueryBuilder } from 'typeorm';
import { z } from 'zod';
import { asEntities } from '../storage/entity-rows';
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
export const DEFAULT_PAGE_SIZE = 20;
const pageSize = z.number().int().min(1, 'must be at least 1').max(MAX_PAGE_SIZE, `must be at most ${MAX_PAGE_SIZE}`);

/** Cursors are opaque to clients: the row's id, encoded, so lists may change how they order without breaking them. */
const toCursor = (id: string) => Buffer.from(id).toString('base64url');

function fromCursor(cursor: string): string {
  const id = Buffer.from(cursor, 'base64url').toString();
  if (!z.uuid().safeParse(id).success) throw badInput('after: not a cursor of this list');
  return id;
}

/** Rows made in a time window, for lists filtered by date. */
export interface CreatedFilter {
  /** Made at or after this instant. */
  createdAfter?: Date | null;
  /** Made before this instant. */
  createdBefore?: Date | null;
}

/** Narrows `query` (rows with `createdAt`) to the filter's window. */
export function whereCreated<T extends ObjectLiteral>(query: SelectQueryBuilder<T>, { createdAfter, createdBefore }: CreatedFilter): SelectQueryBuilder<T> {
  if (createdAfter) query.andWhere(`${query.alias}."createdAt" >= :createdAfter`, { createdAfter });
  if (createdBefore) query.andWhere(`${query.alias}."createdAt" < :createdBefore`, { createdBefore });
  return query;
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
  const rows = await wholeRows(query.orderBy(`${alias}.createdAt`, 'DESC').addOrderBy(`${alias}.id`, 'DESC').limit(first + 1));
  return toPage(rows, first, () => counting.getCount());
}

function toPage<T extends { id: string }>(rows: T[], first: number, countAll: () => Promise<number>): Page<T> {
  const nodes = rows.slice(0, first);
  return { nodes, cursors: nodes.map((node) => toCursor(node.id)), hasNextPage: rows.length > first, countAll };
}

/**
 * The first page of each parent's rows (`query` filtered by `parentColumn` in `parentIds`), newest
 * first, in one query: a list's nested connections cost one query per field, not one per parent.
 */
export async function firstPagesOf<T extends ObjectLiteral & { id: string }>(
  query: SelectQueryBuilder<T>,
  parentColumn: keyof T & string,
  parentIds: readonly string[],
  request: Pick<PageRequest, 'first'>,
): Promise<Map<string, Page<T>>> {
  const first = parseInput(pageSize, request.first ?? DEFAULT_PAGE_SIZE, 'first');
  const alias = query.alias;
  const table = query.expressionMap.mainAlias!.metadata.tableName;
  const unranked = query.clone();
  const counting = (parentId: string) => unranked.clone().andWhere(`${alias}."${parentColumn}" = :parentId`, { parentId }).getCount();
  query
    .andWhere(
      `${alias}.id IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY "${parentColumn}" ORDER BY "createdAt" DESC, id DESC) AS rank
                        FROM "${table}" WHERE "${parentColumn}" = ANY(:parentIds)) ranked WHERE rank <= :limit)`,
      { parentIds: [...parentIds], limit: first + 1 },
    )
    .orderBy(`${alias}.createdAt`, 'DESC')
    .addOrderBy(`${alias}.id`, 'DESC');
  const rows = await wholeRows(query);
  const rowsOf = new Map<unknown, T[]>(parentIds.map((id) => [id, []]));
  for (const row of rows) rowsOf.get(row[parentColumn])?.push(row);
  return new Map(parentIds.map((id) => [id, toPage(rowsOf.get(id)!, first, () => counting(id))]));
}

/** The query's rows, whole, as entities (entity-rows.ts): TypeORM's `getMany` hydrates them at several times the cost. */
async function wholeRows<T extends ObjectLiteral>(query: SelectQueryBuilder<T>): Promise<T[]> {
  return asEntities<T>(query.expressionMap.mainAlias!.metadata, await query.select(`"${query.alias}".*`).getRawMany());
}
