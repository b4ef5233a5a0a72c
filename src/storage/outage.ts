/** Socket errors of a connection that could not be made or broke off: the service is away, not the request wrong. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ECONNABORTED']);

/**
 * PostgreSQL SQLSTATEs of a server going away or not up yet: class 08 (connection exception), 57P01-57P03
 * (admin shutdown, crash shutdown, cannot connect now).
 */
const POSTGRES_OUTAGE = /^(08...|57P0[123])$/;

/** What node-postgres says, without a code, of a connection that ended under a query or could not be had in time. */
const PG_CONNECTION_MESSAGES = /Connection terminated|terminating connection|Client has encountered a connection error|timeout exceeded when trying to connect|Client was closed/;

/**
 * Whether `error` says PostgreSQL or the object store is unreachable (down, restarting, refusing
 * connections) rather than that an operation was wrong: then the caller reports SERVICE_UNAVAILABLE or
 * waits and tries again, and nothing about the request is at fault. Looks through the wrappers TypeORM
 * (`driverError`), the AWS SDK and Node (`cause`, AggregateError's `errors`) put around the cause.
 */
export function isServiceOutage(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > 5) return false;
  const { code, message, name, $metadata } = error as { code?: unknown; message?: unknown; name?: unknown; $metadata?: { httpStatusCode?: number } };
  if (typeof code === 'string' && (NETWORK_CODES.has(code) || POSTGRES_OUTAGE.test(code))) return true;
  if (typeof message === 'string' && PG_CONNECTION_MESSAGES.test(message)) return true;
  // The AWS SDK's names for a store that answers but cannot serve, or a request that timed out.
  if (name === 'TimeoutError' || $metadata?.httpStatusCode === 503) return true;
  const nested = error as { driverError?: unknown; cause?: unknown; errors?: unknown };
  return [nested.driverError, nested.cause, ...(Array.isArray(nested.errors) ? nested.errors : [])].some((inner) => isServiceOutage(inner, depth + 1));
}
