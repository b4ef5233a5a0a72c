// Serves the playground page at `/`: static files from public/, and app/ bundled once, in memory,
// when the API starts (so `npm start` needs no build step and a stale bundle cannot be served).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import express, { Router } from 'express';

const here = path.dirname(fileURLToPath(import.meta.url));

export async function playground(): Promise<Router> {
  const result = await build({
    entryPoints: [path.join(here, 'app', 'main.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: 'inline',
    write: false,
    logLevel: 'silent',
  });
  const bundle = result.outputFiles[0].contents;

  const router = Router();
  router.get('/app.js', (_req, res) => {
    res.type('text/javascript').set('cache-control', 'no-cache').send(Buffer.from(bundle));
  });
  router.use(express.static(path.join(here, 'public')));
  return router;
}
