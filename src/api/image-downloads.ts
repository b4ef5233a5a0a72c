import { Router } from 'express';
import type { Services } from '../services/container';
import { getImage } from '../services/images';
import { sendDownload } from './downloads';

/**
 * `GET /images/:id`: a generated PNG streamed from object storage to its owner (or an admin), with
 * the same Bearer key as the API. Others get 404, as if the image did not exist.
 */
export function imageDownloads(services: Services): Router {
  const router = Router();
  router.get('/images/:id', (req, res) =>
    sendDownload(services, req, res, 'image', async (viewer) => ({
      key: (await getImage(services.db, viewer, req.params.id)).objectKey,
      headers: { 'content-type': 'image/png', 'cache-control': 'private, max-age=31536000, immutable' },
    })));
  return router;
}
