import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildEmojiDataset, HELD_OUT_SUBJECTS } from '../../scripts/base-model/dataset';
import { captionOf, readEmojiDataset, writeEmojiDataset } from '../../scripts/base-model/emoji-records';
import { EngineWorker, FolderPackSource, loadStableDiffusionFrom, Txt2ImgPipeline } from '../../src/engine';
import { parseSafetensors, serializeSafetensors, toFloat32 } from '../../src/engine/weights/safetensors';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'pretrain-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** train.ts as `npm run train:base` runs it, on a tiny model and a 40-image dataset. */
async function trainBase(runDir: string, unetSteps: number, extra: string[] = []) {
  const args = ['tsx', 'scripts/base-model/train.ts', '--tiny', '--data', join(dir, 'emoji.gz'), '--run', runDir,
    '--vae-steps', '3', '--vae-batch', '2', '--unet-steps', String(unetSteps), '--batch', '2', '--warmup-steps', '2', ...extra];
  const { stdout } = await run('npx', args, { cwd: process.cwd() });
  return stdout;
}

const unetParams = (runDir: string) => {
  const stored = parseSafetensors(new Uint8Array(readFileSync(join(runDir, 'unet.safetensors'))));
  return new Map([...stored].filter(([key]) => key.startsWith('param.') || key.startsWith('ema.')).map(([key, t]) => [key, toFloat32(t)]));
};

describe('base model pretraining (train:base, CPU smoke run)', () => {
  beforeAll(async () => {
    await writeEmojiDataset(join(dir, 'emoji.gz'), await buildEmojiDataset({ limit: 40 }));
  });

  it('builds a captioned dataset from the emoji packages, held-out subjects marked', async () => {
    const { records, images } = await readEmojiDataset(join(dir, 'emoji.gz'));
    expect(records).toHaveLength(40);
    expect(images).toHaveLength(40 * 64 * 64 * 3);
    expect(new Set(records.map((r) => r.style))).toEqual(new Set(['noto']));
    expect(captionOf(records[0], true)).toMatch(/^an? [a-z].*, noto style$/);
    // Emoji drawn on white: the corners are white, the middle is not.
    expect(Array.from(images.subarray(0, 3))).toEqual([255, 255, 255]);
    const full = await buildEmojiDataset();
    const heldOut = new Set(full.records.filter((r) => r.heldOut).map((r) => r.subject));
    expect(heldOut).toEqual(new Set(Object.keys(HELD_OUT_SUBJECTS)));
    expect(new Set(full.records.map((r) => r.style))).toEqual(new Set(['noto', 'twemoji']));
  });

  it('trains every stage, resumes bit for bit, and writes a pack the platform loads', async () => {
    const straight = join(dir, 'straight');
    const log = await trainBase(straight, 4);
    expect(log).toMatch(/vae 3\/3 loss/);
    expect(log).toMatch(/pack written/);
    const split = join(dir, 'split');
    await trainBase(split, 2);
    const resumed = await trainBase(split, 4);
    expect(resumed).toMatch(/unet: resuming at step 2/);
    const a = unetParams(straight);
    const b = unetParams(split);
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [key, values] of a) expect(b.get(key), key).toEqual(values);

    const models = await loadStableDiffusionFrom(new FolderPackSource(join(straight, 'pack')));
    // The reserved identifiers are single tokens that no caption contains.
    expect(models.tokenizer.isSingleToken('sks')).toBe(true);
    expect(models.tokenizer.tokenize('a sks')).toEqual(['a</w>', 'sks</w>']);
    expect(models.vae.config.scaling_factor).not.toBe(1);
    const worker = new EngineWorker({ intraOpThreads: 1 });
    const pipeline = new Txt2ImgPipeline(models, worker);
    try {
      const image = await pipeline.generate({ prompt: 'a grinning face, noto style', steps: 2, seed: 1 });
      expect([image.height, image.width]).toEqual([64, 64]);
      expect(image.images.every(Number.isFinite)).toBe(true);
    } finally {
      await pipeline.close();
      await worker.close();
    }
  });

  it('continues a UNet trained on epsilon with v-prediction, and packs it only after a step of v', async () => {
    const legacy = join(dir, 'legacy');
    cpSync(join(dir, 'straight'), legacy, { recursive: true });
    // As the states saved before objectives were recorded (the shipped model's): no objective in the metadata.
    const file = join(legacy, 'unet.safetensors');
    writeFileSync(file, serializeSafetensors(parseSafetensors(new Uint8Array(readFileSync(file))), { steps: '4' }));
    await expect(trainBase(legacy, 4, ['--minutes', '0', '--pack'])).rejects.toThrow(/trained for epsilon: train steps of v_prediction/);
    const log = await trainBase(legacy, 6);
    expect(log).toMatch(/trained for epsilon, continuing with v_prediction/);
    expect(log).toMatch(/pack written/);
    const header = readFileSync(file);
    expect(new TextDecoder().decode(header.subarray(8, 8 + Number(header.readBigUInt64LE(0))))).toContain('"objective":"v_prediction"');
  });
});
