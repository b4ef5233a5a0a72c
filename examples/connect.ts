// What both examples share: where the platform is, who we are, where the PNGs go.
import fs from 'node:fs/promises';
import path from 'node:path';
import { BigDiffusionClient, type JobUpdate } from '@bigdiffusion/client';
import WebSocket from 'ws';

const url = process.env.BIGDIFFUSION_URL ?? 'http://localhost:4000/graphql';
const outputDir = process.env.OUTPUT_DIR ?? 'examples/output';

/** A client with BIGDIFFUSION_API_KEY, or with a new account whose key is printed for the next run. */
export async function connect(): Promise<BigDiffusionClient> {
  // Node 22+ has a WebSocket of its own; the `ws` package serves every version.
  const options = { url, webSocketImpl: WebSocket };
  const apiKey = process.env.BIGDIFFUSION_API_KEY;
  if (apiKey) return new BigDiffusionClient({ ...options, apiKey });
  const { client, secret, user } = await BigDiffusionClient.signUp(options, `example-${Date.now()}@example.com`);
  console.log(`signed up as ${user.email}; next time: BIGDIFFUSION_API_KEY=${secret}`);
  return client;
}

/** Downloads a finished job's images into OUTPUT_DIR and returns their paths. */
export async function saveImages(client: BigDiffusionClient, jobId: string): Promise<string[]> {
  await fs.mkdir(outputDir, { recursive: true });
  const saved: string[] = [];
  for (const { image, png } of await client.downloadImages(jobId)) {
    const file = path.join(outputDir, `${image.id}.png`);
    await fs.writeFile(file, png);
    saved.push(file);
  }
  return saved;
}

/** For followJob's onUpdate: prints the job's state when its status changes and at every tenth of its progress. */
export function printProgress(): (update: JobUpdate) => void {
  let shown = '';
  return ({ status, progress, step, steps, loss }) => {
    const stage = `${status} ${Math.floor(progress * 10)}`;
    if (stage !== shown) console.log(`  ${status} step ${step}/${steps}${loss === null ? '' : `, loss ${loss.toFixed(4)}`}`);
    shown = stage;
  };
}

/** An environment variable as a whole number, or the fallback. */
export const intFromEnv = (name: string, fallback: number): number => (process.env[name] ? Number.parseInt(process.env[name], 10) : fallback);
