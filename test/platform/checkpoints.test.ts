import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serializeSafetensors } from '../../src/engine/weights/safetensors';
import { JobCheckpoints } from '../../src/worker/checkpoints';
import { startTestPlatform, type TestPlatform } from './helpers';

/** A job whose checkpoints this engine cannot read (an older format, say) starts over instead of failing. */
describe('job checkpoints', () => {
  let platform: TestPlatform;

  beforeAll(async () => {
    platform = await startTestPlatform({ ROLE: 'api' });
  }, 120_000);
  afterAll(async () => {
    await platform?.stop();
  });

  it('drops checkpoints of a format the engine no longer reads, so the job starts over', async () => {
    const { store, config } = platform.services;
    const jobId = randomUUID();
    const checkpoints = new JobCheckpoints(store, jobId, null, config.checkpoints);
    const older = serializeSafetensors(new Map(), { format: 'bigdiffusion.dreambooth-checkpoint.v1', state: '{}' });
    for (const step of ['00000002', '00000004']) await store.put(`checkpoints/${jobId}/base/${step}.safetensors`, older);
    expect(await checkpoints.newest()).toBeUndefined();
    expect(await store.list(`checkpoints/${jobId}/`)).toEqual([]);
  });
});
