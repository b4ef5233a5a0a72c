import { pipeline } from 'node:stream/promises';
import type { Request, Response } from 'express';
import { isServiceOutage } from '../services/availability';
import type { Services } from '../services/container';
import { AppError } from '../services/errors';
import type { User } from '../entities';
import { SERVICE_UNAVAILABLE_MESSAGE } from './errors';

const STATUS: Partial<Record<AppError['code'], number>> = { UNAUTHENTICATED: 401, NOT_FOUND: 404, BAD_USER_INPUT: 404 };

/** What a download route sends: the object under `key`, with these response headers besides its length. */
export interface Download {
  key: string;
  headers: Record<string, string>;
}

/**
 * Streams one object of storage to whoever `locate` lets have it, authenticated with the same Bearer key as
 * the API: 401 without a valid key, the service's refusals as 404 (as if nothing were there), 503 while a
 * store is away. `what` names the object in the log.
 */
export async function sendDownload(
  { keys, store, log }: Services, req: Request, res: Response, what: string, locate: (viewer: User) => Promise<Download>,
): Promise<void> {
  try {
    const viewer = await keys.authenticate(req.headers.authorization);
    if (!viewer) return refuse(res, 401, 'UNAUTHENTICATED', 'A valid API key is required');
    const { key, headers } = await locate(viewer);
    const object = await store.stream(key);
    if (!object) return refuse(res, 404, 'NOT_FOUND', `${what[0].toUpperCase()}${what.slice(1)} not found`);
    res.status(200).set({ ...headers, ...(object.contentLength !== undefined ? { 'content-length': String(object.contentLength) } : {}) });
    await pipeline(object.body, res);
  } catch (error) {
    if (error instanceof AppError && STATUS[error.code]) return refuse(res, STATUS[error.code]!, error.code, error.message);
    if (isServiceOutage(error) && !res.headersSent) return refuse(res, 503, 'SERVICE_UNAVAILABLE', SERVICE_UNAVAILABLE_MESSAGE);
    log.error({ err: error }, `${what} download failed`);
    if (!res.headersSent) refuse(res, 500, 'INTERNAL_SERVER_ERROR', 'Internal server error');
    else res.destroy();
  }
}

function refuse(res: Response, status: number, code: string, message: string): void {
  res.status(status).json({ errors: [{ message, extensions: { code } }] });
}
