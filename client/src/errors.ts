/** The codes the API puts in `extensions.code`: its own, and those about a malformed request. */
export const API_ERROR_CODES = [
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'NOT_FOUND',
  'BAD_USER_INPUT',
  'CONFLICT',
  'QUOTA_EXCEEDED',
  'RATE_LIMITED',
  'INTERNAL_SERVER_ERROR',
  'BAD_REQUEST',
  'GRAPHQL_PARSE_FAILED',
  'GRAPHQL_VALIDATION_FAILED',
] as const;

/** `NETWORK_ERROR`: the API could not be reached or did not answer with GraphQL. */
export type ApiErrorCode = (typeof API_ERROR_CODES)[number] | 'NETWORK_ERROR';

/** One error as the API formats it. */
export interface GraphQLErrorBody {
  message: string;
  path?: readonly (string | number)[];
  extensions?: { code?: string };
}

/** A refusal or failure the API answered, by its code; `errors` holds every error of the response. */
export class ApiError extends Error {
  override readonly name = 'ApiError';

  constructor(
    readonly code: ApiErrorCode,
    message: string,
    readonly errors: readonly GraphQLErrorBody[] = [],
  ) {
    super(message);
  }

  static fromErrors(errors: readonly GraphQLErrorBody[]): ApiError {
    const code = errors[0]?.extensions?.code;
    const known = (API_ERROR_CODES as readonly string[]).includes(code ?? '') ? (code as ApiErrorCode) : 'INTERNAL_SERVER_ERROR';
    return new ApiError(known, errors.map((e) => e.message).join('\n'), errors);
  }
}

/** Whether `error` is an ApiError, of `code` when given: `if (isApiError(e, 'RATE_LIMITED')) retryLater()`. */
export function isApiError(error: unknown, code?: ApiErrorCode): error is ApiError {
  return error instanceof ApiError && (code === undefined || error.code === code);
}

/** A job followed to its end that did not succeed (FAILED or CANCELED); `update` is its last state. */
export class JobFailedError extends Error {
  override readonly name = 'JobFailedError';

  constructor(readonly update: { jobId: string; status: string; error: string | null }) {
    super(`Job ${update.jobId} ${update.status.toLowerCase()}${update.error ? `: ${update.error}` : ''}`);
  }
}
