import { Router } from 'express';
import type { Services } from '../services/container';
import { getExport } from '../services/weight-export';
import { sendDownload } from './downloads';

/**
 * `GET /exports/:id`: a weight export (exportWeights) streamed from object storage to its owner, with the
 * same Bearer key as the API, until it expires. Others get 404, as if it did not exist.
 */
export function weightDownloads(services: Services): Router {
  const router = Router();
  router.get('/exports/:id', (req, res) =>
    sendDownload(services, req, res, 'weight export', async (viewer) => {
      const exported = await getExport(services.db, viewer, req.params.id);
      return {
        key: exported.objectKey,
        headers: {
          'content-type': exported.fileName.endsWith('.tar') ? 'application/x-tar' : 'application/octet-stream',
          'content-disposition': `attachment; filename="${exported.fileName}"`,
          'cache-control': 'private, no-store',
        },
      };
    }));
  return router;
}
