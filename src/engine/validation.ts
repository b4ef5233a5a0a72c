import { type z } from 'zod';

/**
 * Zod's issues as the one line a typed error carries: `path: message; ...`. `root` names an issue about the
 * whole value; `limit` keeps a config that is wrong everywhere from flooding the message.
 */
export function describeIssues(error: z.ZodError, { root = 'request', limit = Infinity } = {}): string {
  return error.issues.slice(0, limit).map((issue) => `${issue.path.join('.') || root}: ${issue.message}`).join('; ');
}
