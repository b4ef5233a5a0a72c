import { unwrapResolverError } from '@apollo/server/errors';
import { GraphQLError, type GraphQLFormattedError } from 'graphql';
import type { Logger } from 'pino';
import { isServiceOutage } from '../services/availability';
import { AppError } from '../services/errors';

/** Codes that graphql-js, Apollo, graphql-upload and graphql-armor raise about the request itself. */
const REQUEST_ERROR_CODES = new Set([
  'GRAPHQL_PARSE_FAILED',
  'GRAPHQL_VALIDATION_FAILED',
  'BAD_USER_INPUT',
  'BAD_REQUEST',
  'UNAUTHENTICATED',
  'OPERATION_RESOLUTION_FAILURE',
  'PERSISTED_QUERY_NOT_FOUND',
  'PERSISTED_QUERY_NOT_SUPPORTED',
]);

/** What a client reads while PostgreSQL or the object store is unreachable: nothing was changed, so trying again later is safe. */
export const SERVICE_UNAVAILABLE_MESSAGE = 'The service is temporarily unavailable; try again shortly';

/**
 * What a client sees of an error: our AppErrors and errors about the request pass with their code;
 * PostgreSQL or the object store being unreachable is SERVICE_UNAVAILABLE (a transaction that failed
 * wrote nothing); everything else (a bug, a failed query) is logged and reported as
 * INTERNAL_SERVER_ERROR with no message, stack, SQL or file path.
 */
export function createErrorFormatter(log: Logger) {
  return (formatted: GraphQLFormattedError, error: unknown): GraphQLFormattedError => {
    const original = unwrapResolverError(error);
    if (original instanceof AppError) {
      return { message: original.message, path: formatted.path, extensions: { code: original.code } };
    }
    const code = formatted.extensions?.code;
    if (typeof code === 'string' && REQUEST_ERROR_CODES.has(code) && isAboutRequest(original)) {
      return { message: withoutSuggestions(formatted.message), locations: formatted.locations, path: formatted.path, extensions: { code } };
    }
    if (code === 'SERVICE_UNAVAILABLE' || isServiceOutage(original)) {
      log.warn({ err: original, path: formatted.path }, 'a store is unreachable');
      return { message: SERVICE_UNAVAILABLE_MESSAGE, path: formatted.path, extensions: { code: 'SERVICE_UNAVAILABLE' } };
    }
    log.error({ err: original, path: formatted.path }, 'internal error in a GraphQL request');
    return { message: 'Internal server error', path: formatted.path, extensions: { code: 'INTERNAL_SERVER_ERROR' } };
  };
}

/**
 * graphql-js's message less its guesses (`Cannot query field "mee" on type "Query". Did you mean "me"?`):
 * they would let anonymous callers map the schema name by name.
 */
function withoutSuggestions(message: string): string {
  return message.replace(/ Did you mean [^?]*\?/g, '');
}

/** Raised by the GraphQL machinery itself (parse, validation, coercion), not wrapping a thrown error. */
function isAboutRequest(error: unknown): boolean {
  return error instanceof GraphQLError && (!error.originalError || error.originalError instanceof GraphQLError);
}
