import { pipeline } from 'node:stream/promises';
import { Router, type Response } from 'express';
import { AppError } from '../services/errors';
import { getImage } from '../services/images';
import type { Services } from '../services/container';
import { isServiceOutage } from '../services/availability';
import { SERVICE_UNAVAILABLE_MESSAGE } from './errors';

const STATUS: Partial<Record<AppError['code'], number>> = { UNAUTHENTICATED: 401, NOT_FOUND: 404, BAD_USER_INPUT: 404 };

/**
 * `GET /images/:id`: a generated PNG streamed from object storage to its owner (or an admin), with
 * the same Bearer key as the API. Others get 404, as if the image did not exist.
 */
export function imageDownloads({ db, store, log, keys }: Services): Router {
  const router = Router();
  router.get('/images/:id', async (req, res) => {
    try {
      const viewer = await keys.authenticate(req.headers.authorization);
      if (!viewer) return refuse(res, 401, 'UNAUTHENTICATED', 'A valid API key is required');
      const image = await getImage(db, viewer, req.params.id);
      const object = await store.stream(image.objectKey);
      if (!object) return refuse(res, 404, 'NOT_FOUND', 'Image not found');
      res.status(200).set({
        'content-type': 'image/png',
        'cache-control': 'private, max-age=31536000, immutable',
        ...(object.contentLength !== undefined ? { 'content-length': String(object.contentLength) } : {}),
      });
      await pipeline(object.body, res);
    } catch (error) {
      if (error instanceof AppError && STATUS[error.code]) return refuse(res, STATUS[error.code]!, error.code, error.message);
      if (isServiceOutage(error) && !res.headersSent) return refuse(res, 503, 'SERVICE_UNAVAILABLE', SERVICE_UNAVAILABLE_MESSAGE);
      log.error({ err: error }, 'image download failed');
      if (!res.headersSent) refuse(res, 500, 'INTERNAL_SERVER_ERROR', 'Internal server error');
      else res.destroy();
    }
  });
  return router;
}

function refuse(res: Response, status: number, code: string, message: string): void {
  res.status(status).json({ errors: [{ message, extensions: { code } }] });
}
