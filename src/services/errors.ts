/**
 * Failures a caller can act on. Each carries the code the API reports (as GraphQL
 * `extensions.code`); anything else that escapes a service is an internal error and is logged,
 * never shown.
 */
export type ErrorCode = 'UNAUTHENTICATED' | 'FORBIDDEN' | 'NOT_FOUND' | 'BAD_USER_INPUT' | 'CONFLICT' | 'QUOTA_EXCEEDED' | 'RATE_LIMITED';

export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    // A caller's mistake, not a bug: its stack would never be read, and capturing one was a tenth of
    // the CPU of a request refused for a bad key.
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = stackTraceLimit;
    this.name = 'AppError';
  }
}

export const unauthenticated = (message = 'A valid API key is required') => new AppError('UNAUTHENTICATED', message);
export const forbidden = (message = 'Not allowed') => new AppError('FORBIDDEN', message);
export const notFound = (what: string) => new AppError('NOT_FOUND', `${what} not found`);
export const badInput = (message: string) => new AppError('BAD_USER_INPUT', message);
export const conflict = (message: string) => new AppError('CONFLICT', message);
export const quotaExceeded = (message: string) => new AppError('QUOTA_EXCEEDED', message);
export const rateLimited = (message: string) => new AppError('RATE_LIMITED', message);
