import { hash } from 'node:crypto';
import type { RequestHandler } from 'express';
import { ipKeyGenerator, rateLimit } from 'express-rate-limit';
import { sendRequestError } from './graphql-post';

/**
 * HTTP requests (GraphQL and downloads) each API key may make in a minute, counted in this process:
 * behind several API processes a key gets that many from each. Requests without a key (sign-up,
 * health) count by client address. Past the limit: 429 with RATE_LIMITED and `Retry-After`.
 * WebSocket subscriptions are one connection each and are not counted.
 */
export function perKeyRateLimit(perMinute: number): RequestHandler {
  return rateLimit({
    windowMs: 60_000,
    limit: perMinute,
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    // A digest, so the limiter's memory holds no key (one-shot, as api-keys.ts hashes keys).
    keyGenerator: (req) => {
      const authorization = req.headers.authorization;
      return authorization ? hash('sha256', authorization, 'base64url') : ipKeyGenerator(req.ip ?? '');
    },
    // node's API, not express's: the JSON POST path hands the limiter node's response (server.ts).
    handler: (_req, res) =>
      sendRequestError(res, {
        status: 429,
        body: { errors: [{ message: `More than ${perMinute} requests in a minute with this key: retry after the time in Retry-After`, extensions: { code: 'RATE_LIMITED' } }] },
      }),
  });
}
