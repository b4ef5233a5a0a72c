import fs from 'node:fs/promises';
import S3rver from 's3rver';
import type { Logger } from 'pino';
import type { S3Config } from '../config';

export interface RunningS3 {
  config: S3Config;
  stop(): Promise<void>;
}

/**
 * Starts s3rver on 127.0.0.1 with `bucket` created, storing objects under `dataDir`; `port` (default: a
 * free one) lets a restart keep its endpoint.
 */
export async function startEmbeddedS3(dataDir: string, bucket: string, log: Logger, port = 0): Promise<RunningS3> {
  await fs.mkdir(dataDir, { recursive: true });
  const server = new S3rver({
    address: '127.0.0.1',
    port,
    directory: dataDir,
    silent: true,
    configureBuckets: [{ name: bucket }],
  });
  const { port: listening } = await server.run();
  log.info({ dataDir, port: listening }, 'embedded S3 started');
  return {
    // s3rver accepts only its fixed development credentials.
    config: {
      endpoint: `http://127.0.0.1:${listening}`,
      bucket,
      region: 'us-east-1',
      accessKeyId: 'S3RVER',
      secretAccessKey: 'S3RVER',
    },
    stop: async () => {
      // The S3 client keeps connections alive; close() would wait for them forever.
      server.httpServer?.closeAllConnections();
      await server.close();
    },
  };
}
