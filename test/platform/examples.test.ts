import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, tempDir, type TestPlatform } from './helpers';

const run = promisify(execFile);

/** `npm run example:finetune` and `example:generate` as a user runs them, against a platform started here, with few steps. */
describe('the examples', () => {
  let platform: TestPlatform;
  let output: Awaited<ReturnType<typeof tempDir>>;

  const example = (name: string, env: Record<string, string> = {}) =>
    run(process.execPath, ['--import', 'tsx', `examples/${name}.ts`], {
      env: { ...process.env, BIGDIFFUSION_URL: platform.url, OUTPUT_DIR: output.dir, STEPS: '2', ...env },
      timeout: 60_000,
    });
  const savedPngs = (stdout: string) => [...stdout.matchAll(/^saved (.+\.png)$/gm)].map((m) => m[1]);

  beforeAll(async () => {
    platform = await startTestPlatform();
    output = await tempDir('bd-examples-');
  });
  afterAll(async () => {
    await platform?.stop();
    await output?.remove();
  });

  it('fine-tunes on sample photos and saves what the new model draws, then generates more with it', async () => {
    const finetune = await example('finetune', { FINETUNE_STEPS: '2' });
    expect(finetune.stdout).toMatch(/^signed up as example-\d+@example\.com; next time: BIGDIFFUSION_API_KEY=\S+$/m);
    expect(finetune.stdout).toMatch(/SUCCEEDED step 2\/2, loss \d/);
    const trained = savedPngs(finetune.stdout);
    expect(trained).toHaveLength(2);
    for (const file of trained) {
      expect(path.dirname(file)).toBe(output.dir);
      expect(await sharp(await fs.readFile(file)).metadata()).toMatchObject({ format: 'png', width: 64, height: 64 });
    }

    // The command it prints for more, with the key it printed.
    const [, key] = finetune.stdout.match(/BIGDIFFUSION_API_KEY=(\S+)/)!;
    const [, modelId, prompt] = finetune.stdout.match(/^more of it: MODEL_ID=(\S+) PROMPT="(.+)" npm run example:generate$/m)!;
    const generate = await example('generate', { BIGDIFFUSION_API_KEY: key, MODEL_ID: modelId, PROMPT: prompt });
    expect(generate.stdout).not.toMatch(/signed up/);
    const drawn = savedPngs(generate.stdout);
    expect(drawn).toHaveLength(2);
    const [image] = await platform.services.db.query('SELECT i.prompt, j.params->>\'modelId\' AS "modelId" FROM image i JOIN job j ON j.id = i."jobId" WHERE i.id = $1', [
      path.basename(drawn[0], '.png'),
    ]);
    expect(image).toEqual({ prompt, modelId });
  });

  it('generates on a new model of the default base model without a key or model', async () => {
    const { stdout } = await example('generate');
    expect(stdout).toMatch(/signed up as/);
    expect(savedPngs(stdout)).toHaveLength(2);
  });
});
