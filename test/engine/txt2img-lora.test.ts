import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoraError, type LoraLayer, parseUNetLora } from '../../src/engine/models/lora';
import { trainDreamBooth } from '../../src/engine/pipelines/dreambooth';
import { loadTrainingPicture } from '../../src/engine/pipelines/images';
import { serializeLora } from '../../src/engine/pipelines/lora-file';
import {
  loadStableDiffusionFrom, parseUNetWeights, serializeUNet, type StableDiffusionModels, withUNetWeights,
} from '../../src/engine/pipelines/stable-diffusion';
import { Txt2ImgPipeline, type Txt2ImgRequest } from '../../src/engine/pipelines/txt2img';
import { EngineWorker } from '../../src/engine/runtime';
import { WeightBindingError } from '../../src/engine/weights/bind';
import { FolderPackSource, PackError, type PackSource } from '../../src/engine/weights/pack';
import { parseSafetensors } from '../../src/engine/weights/safetensors';
import { hasFixtures, relativeL2, TINY_SD15 } from '../helpers/fixtures';

const PACK = join(TINY_SD15, 'pack');

/** A pack held in memory, as one in object storage reaches the engine: only through `read` and `exists`. */
class MemoryPackSource implements PackSource {
  constructor(readonly files: Map<string, Uint8Array>) {}

  async read(relPath: string): Promise<Uint8Array> {
    const file = this.files.get(relPath);
    if (!file) throw new PackError('MISSING_FILE', `pack has no ${relPath}`);
    return file;
  }

  async exists(relPath: string): Promise<boolean> {
    return this.files.has(relPath);
  }
}

/** W + scale * up @ down for every adapted layer: the LoRA merged into a UNet checkpoint. */
function mergeLora(unet: ReadonlyMap<string, Float32Array>, lora: ReadonlyMap<string, LoraLayer>, scale: number): Map<string, Float32Array> {
  const merged = new Map(unet);
  for (const [module, { down, up, rank, inFeatures, outFeatures }] of lora) {
    const weight = unet.get(`${module}.weight`)!.slice();
    for (let o = 0; o < outFeatures; o++) {
      for (let i = 0; i < inFeatures; i++) {
        let sum = 0;
        for (let r = 0; r < rank; r++) sum += up[o * rank + r] * down[r * inFeatures + i];
        weight[o * inFeatures + i] += scale * sum;
      }
    }
    merged.set(`${module}.weight`, weight);
  }
  return merged;
}

describe.skipIf(!hasFixtures)('txt2img with a trained LoRA or UNet on tiny-sd15', () => {
  let worker: EngineWorker;
  let models: StableDiffusionModels;
  let pipeline: Txt2ImgPipeline;
  let lora: Map<string, LoraLayer>;
  const request: Txt2ImgRequest = { prompt: 'a sks square', steps: 4, seed: 21, scheduler: 'ddim' };

  beforeAll(async () => {
    worker = new EngineWorker();
    models = await loadStableDiffusionFrom(new FolderPackSource(PACK));
    pipeline = new Txt2ImgPipeline(models, worker);
    const square = await sharp({ create: { width: 40, height: 40, channels: 3, background: '#ffffff' } })
      .composite([{ input: { create: { width: 16, height: 16, channels: 3, background: '#ff0000' } }, left: 12, top: 12 }])
      .png().toBuffer();
    const picture = await loadTrainingPicture(square, 32);
    const result = await trainDreamBooth(models, {
      instance: [{ image: async () => picture, prompt: 'a sks square' }],
      method: { kind: 'lora', rank: 4 }, steps: 4, learningRate: 1e-2, seed: 3,
    }, { worker });
    lora = parseUNetLora(parseSafetensors(serializeLora(result.lora!, 4)));
  });

  afterAll(async () => {
    await pipeline?.close();
    await worker?.close();
  });

  it('a saved and reloaded LoRA changes the image; at scale 0 it gives the base image', async () => {
    const base = await pipeline.generate(request);
    const withLora = await pipeline.generate({ ...request, lora: { weights: lora, scale: 1 } });
    const off = await pipeline.generate({ ...request, lora: { weights: lora, scale: 0 } });
    expect(relativeL2(withLora.images, base.images)).toBeGreaterThan(1e-2);
    expect(relativeL2(off.images, base.images)).toBeLessThan(1e-6);
  });

  it('applies the LoRA as merged weights would, and shares one graph among LoRAs of one shape', async () => {
    const withLora = await pipeline.generate({ ...request, lora: { weights: lora, scale: 0.7 } });
    const sessions = worker.sessionCount;
    // The merged UNet also makes the round trip through its safetensors file.
    const file = serializeUNet(models, mergeLora(models.unet.weights, lora, 0.7));
    const merged = new Txt2ImgPipeline(withUNetWeights(models, parseUNetWeights(models, file)), worker);
    try {
      expect(relativeL2(withLora.images, (await merged.generate(request)).images)).toBeLessThan(1e-4);
    } finally {
      await merged.close();
    }
    // Another LoRA of the same rank and layers is only other feeds for the same session.
    const halved = new Map([...lora].map(([module, layer]) => [module, { ...layer, up: layer.up.map((x) => x / 2) }]));
    await pipeline.generate({ ...request, lora: { weights: halved } });
    expect(worker.sessionCount).toBe(sessions);
  });

  it('refuses a LoRA for layers the UNet lacks, and a UNet checkpoint that does not fit', async () => {
    const [[module, layer]] = lora;
    const sessions = worker.sessionCount;
    await expect(pipeline.generate({ ...request, lora: { weights: new Map([[`${module}x`, layer]]) } })).rejects.toThrow(LoraError);
    const wide = new Map([[module, { ...layer, inFeatures: layer.inFeatures + 1, down: new Float32Array(layer.rank * (layer.inFeatures + 1)) }]]);
    await expect(pipeline.generate({ ...request, lora: { weights: wide } })).rejects.toThrow(LoraError);
    // refused before anything was compiled
    expect(worker.sessionCount).toBe(sessions);
    const missing = new Map(models.unet.weights);
    missing.delete('conv_out.bias');
    expect(() => withUNetWeights(models, missing)).toThrow(WeightBindingError);
    const misshapen = new Map(models.unet.weights).set('conv_out.bias', new Float32Array(1));
    expect(() => withUNetWeights(models, misshapen)).toThrow(/conv_out.bias/);
  });

  it('loads a whole model, tokenizer included, from a PackSource that is not a folder', async () => {
    const files = new Map<string, Uint8Array>();
    for (const entry of await readdir(PACK, { recursive: true, withFileTypes: true })) {
      if (entry.isFile()) {
        const path = join(entry.parentPath, entry.name);
        files.set(relative(PACK, path).split('\\').join('/'), await readFile(path));
      }
    }
    const fromMemory = await loadStableDiffusionFrom(new MemoryPackSource(files));
    expect(fromMemory.tokenizer.encodePadded(request.prompt)).toEqual(models.tokenizer.encodePadded(request.prompt));
    const memoryPipeline = new Txt2ImgPipeline(fromMemory, worker);
    try {
      expect((await memoryPipeline.generate(request)).images).toEqual((await pipeline.generate(request)).images);
    } finally {
      await memoryPipeline.close();
    }
    files.delete('tokenizer/vocab.json');
    files.delete('tokenizer/tokenizer.json');
    await expect(loadStableDiffusionFrom(new MemoryPackSource(files))).rejects.toThrow(/tokenizer/);
  });
});
