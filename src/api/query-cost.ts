import { createRequire } from 'node:module';
import { getNamedType, GraphQLError, type DocumentNode, type GraphQLSchema } from 'graphql';
import type { ComplexityEstimator } from 'graphql-query-complexity';
import { DEFAULT_PAGE_SIZE } from '../services/pagination';

// The CommonJS build: its ES module build imports graphql's .mjs files, another instance of graphql
// than the one type-graphql builds the schema with, and graphql refuses to mix them.
const { getComplexity, simpleEstimator } = createRequire(import.meta.url)('graphql-query-complexity') as typeof import('graphql-query-complexity');

/**
 * A connection's selection is paid once per row its page may hold (`first`, or the default), so the
 * cost of a query grows with what it can make the server load: `models(first: 100) { nodes {
 * versions(first: 100) { nodes { id } } } }` costs over 20,000 where a field of one object costs 1.
 */
const pageSizeEstimator: ComplexityEstimator = ({ field, args, childComplexity }) => {
  if (!getNamedType(field.type).name.endsWith('Connection')) return undefined;
  return 1 + childComplexity * (typeof args.first === 'number' ? Math.max(args.first, 1) : DEFAULT_PAGE_SIZE);
};

const estimators = [pageSizeEstimator, simpleEstimator({ defaultComplexity: 1 })];

/**
 * The operation's cost error when it costs more than `maxCost` (QUERY_MAX_COST), else null. Variables
 * count (a `first` may come in one); variables that do not fit the operation are left for execution
 * to report.
 */
export function queryCostError(
  schema: GraphQLSchema,
  document: DocumentNode,
  variables: Record<string, unknown> | null | undefined,
  operationName: string | null | undefined,
  maxCost: number,
): GraphQLError | null {
  let cost: number;
  try {
    cost = getComplexity({ schema, query: document, variables: variables ?? {}, operationName: operationName ?? undefined, estimators });
  } catch {
    return null;
  }
  if (cost <= maxCost) return null;
  return new GraphQLError(`Query cost ${cost} exceeds the limit of ${maxCost}; a connection costs its selection once per row of its page (first)`, {
    extensions: { code: 'GRAPHQL_VALIDATION_FAILED', http: { status: 400 } },
  });
}
