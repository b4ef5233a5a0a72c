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
  const cost = costOf(schema, document, variables ?? {}, operationName ?? undefined);
  if (cost === null || cost <= maxCost) return null;
  return new GraphQLError(`Query cost ${cost} exceeds the limit of ${maxCost}; a connection costs its selection once per row of its page (first)`, {
    extensions: { code: 'GRAPHQL_VALIDATION_FAILED', http: { status: 400 } },
  });
}

/**
 * Costs already counted, by document (Apollo's document cache hands back the same one for the same
 * query text) and then by operation and variables: walking the document was a tenth of a cheap
 * query's CPU, and clients send the same few queries over and over. A document's memo is bounded.
 */
const costs = new WeakMap<DocumentNode, Map<string, number | null>>();
const COSTS_PER_DOCUMENT = 64;

/** The operation's cost; null when it cannot be counted (variables that do not fit it). */
function costOf(schema: GraphQLSchema, document: DocumentNode, variables: Record<string, unknown>, operationName: string | undefined): number | null {
  let known = costs.get(document);
  if (!known) costs.set(document, (known = new Map()));
  const key = `${operationName ?? ''}\n${JSON.stringify(variables)}`;
  let cost = known.get(key);
  if (cost === undefined) {
    try {
      cost = getComplexity({ schema, query: document, variables, operationName, estimators });
    } catch {
      cost = null;
    }
    if (known.size >= COSTS_PER_DOCUMENT) known.clear();
    known.set(key, cost);
  }
  return cost;
}
