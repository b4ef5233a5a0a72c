import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import sharp from 'sharp';
import { extract } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EngineWorker, FolderPackSource, loadStableDiffusionFrom, parseLoraFile, parseSafetensors, Txt2ImgPipeline, type StableDiffusionModels,
} from '../../src/engine';
import { toFloat32 } from '../../src/engine/weights/safetensors';
import { WeightExport } from '../../src/entities';
import { loadBaseModelPack } from '../../src/services/base-models';
import { errorCode, gql, gqlUpload, ok, signUp, startTestPlatform, tempDir, type TestPlatform } from './helpers';
import { createModel, defaultBaseModelId, newAdminKey } from './setup';

const EXPORT = 'mutation($input: ExportWeightsInput!) { exportWeights(input: $input) { id url fileName bytes format modelId versionId expiresAt } }';

/** Whether the fixture tooling's Python has diffusers and torch, to load an exported pack as diffusers users do. */
const hasDiffusers = spawnSync('python3', ['-c', 'import diffusers, torch'], { stdio: 'ignore' }).status === 0;
if (!hasDiffusers) console.warn('[weight-export] python3 has no diffusers and torch: the StableDiffusionPipeline.from_pretrained check is skipped.');


/** Unpacks a tar into `dir`, returning the files' paths relative to it. */
async function untar(bytes: Uint8Array, dir: string): Promise<string[]> {
  const files: string[] = [];
  const unpack = extract();
  unpack.on('entry', (header, stream, next) => {
    const file = path.join(dir, header.name);
    files.push(header.name);
    void fs.mkdir(path.dirname(file), { recursive: true })
      .then(async () => fs.writeFile(file, await buffer(stream)))
      .then(() => next(), next);
  });
  await pipeline(Readable.from([Buffer.from(bytes)]), unpack);
  return files.sort();
}

/**
 * Weights out, on a LoRA fine-tune of the bundled base model: the LoRA in diffusers' and kohya's naming checked
 * against the base UNet's layers, the merged UNet against base + B A, and the pack loaded by the engine's own
 * loader drawing what the base model with the LoRA fed draws.
 */
describe('exportWeights', () => {
  let platform: TestPlatform;
  let owner: string;
  let other: string;
  let admin: string;
  let modelId: string;
  let base: StableDiffusionModels;
  let work: Awaited<ReturnType<typeof tempDir>>;
  let engine: EngineWorker;

  const exportAs = (format: string, ids: Record<string, string>, key = owner) => gql(platform.url, EXPORT, { input: { format, ...ids } }, key);
  const download = async (url: string, key: string | null = owner) =>
    fetch(new URL(url, platform.url), { headers: key ? { authorization: `Bearer ${key}` } : {} });
  const fileOf = async (format: string) => {
    const made = (await ok(exportAs(format, { modelId }))).exportWeights;
    const response = await download(made.url);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-disposition')).toBe(`attachment; filename="${made.fileName}"`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    expect(bytes.length).toBe(made.bytes);
    return { made, bytes };
  };
  /** The base UNet's LoRA targets (attention projections), by module path, with [out, in]. */
  const attentionLayers = () => new Map([...base.unet.weights.keys()]
    .filter((key) => /\.(to_q|to_k|to_v|to_out\.0)\.weight$/.test(key))
    .map((key) => {
      const module = key.slice(0, -'.weight'.length);
      return [module, key] as const;
    }));

  beforeAll(async () => {
    platform = await startTestPlatform();
    work = await tempDir('bd-export-');
    engine = new EngineWorker({ device: 'cpu' });
    ({ key: owner } = await signUp(platform.url, 'exporter@example.org'));
    ({ key: other } = await signUp(platform.url, 'other@example.org'));
    admin = await newAdminKey(platform, 'root@example.org');
    const baseModel = { id: await defaultBaseModelId(platform, owner) };
    const [{ storageLocation }] = await platform.services.db.query('SELECT "storageLocation" FROM base_model WHERE id = $1', [baseModel.id]);
    base = await loadBaseModelPack(platform.services.store, storageLocation);

    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#2a6' } }).png().toBuffer();
    const photo = (await ok(gqlUpload(platform.url, 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', {}, { bytes: png, name: 'p.png', type: 'image/png' }, owner))).uploadInstanceImage.id;
    const started = (await ok(gql(platform.url, 'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } model { id } } }', {
      input: { target: 'PRIVATE', baseModelId: baseModel.id, category: 'cup', kind: 'OBJECT', method: 'LORA', steps: 2, learningRate: 1e-2, instanceImageIds: [photo] },
    }, owner))).startFineTune;
    modelId = started.model.id;
    for (let status = 'QUEUED'; status !== 'SUCCEEDED';) {
      if (status === 'FAILED' || status === 'CANCELED') throw new Error(`the fine-tune ${status}`);
      await new Promise((resolve) => setTimeout(resolve, 300));
      status = (await ok(gql(platform.url, 'query($id: ID!) { job(id: $id) { status } }', { id: started.job.id }, owner))).job.status;
    }
  }, 180_000);
  afterAll(async () => {
    await engine?.close();
    await platform?.stop();
    await work?.remove();
  });

  it('writes the LoRA in diffusers naming, one down/up pair per attention projection of the base UNet', async () => {
    const { made, bytes } = await fileOf('DIFFUSERS_LORA');
    expect(made).toMatchObject({ format: 'DIFFUSERS_LORA', modelId, fileName: 'cup-v1-lora.safetensors' });
    const tensors = parseSafetensors(bytes);
    const layers = attentionLayers();
    expect(tensors.size).toBe(2 * layers.size);
    for (const [module, weightKey] of layers) {
      const down = tensors.get(`unet.${module}.lora.down.weight`)!;
      const up = tensors.get(`unet.${module}.lora.up.weight`)!;
      // down [rank, in] and up [out, rank] of the base's [out, in] projection.
      expect([down.shape[0], up.shape[1]]).toEqual([4, 4]);
      expect(up.shape[0] * down.shape[1]).toBe(base.unet.weights.get(weightKey)!.length);
    }
  });

  it('writes the same LoRA in kohya naming with alpha = rank', async () => {
    const diffusers = parseSafetensors((await fileOf('DIFFUSERS_LORA')).bytes);
    const { made, bytes } = await fileOf('KOHYA_LORA');
    expect(made.fileName).toBe('cup-v1-kohya-lora.safetensors');
    const kohya = parseSafetensors(bytes);
    expect(kohya.size).toBe(3 * attentionLayers().size);
    for (const module of attentionLayers().keys()) {
      const name = `lora_unet_${module.replaceAll('.', '_')}`;
      expect(toFloat32(kohya.get(`${name}.alpha`)!)).toEqual(Float32Array.of(4));
      expect(kohya.get(`${name}.lora_down.weight`)!.shape).toEqual(diffusers.get(`unet.${module}.lora.down.weight`)!.shape);
      expect(toFloat32(kohya.get(`${name}.lora_down.weight`)!)).toEqual(toFloat32(diffusers.get(`unet.${module}.lora.down.weight`)!));
      expect(toFloat32(kohya.get(`${name}.lora_up.weight`)!)).toEqual(toFloat32(diffusers.get(`unet.${module}.lora.up.weight`)!));
    }
  });

  it('writes the whole UNet in diffusers layout with the LoRA merged: W + B A', async () => {
    const lora = parseLoraFile((await fileOf('DIFFUSERS_LORA')).bytes);
    const unet = parseSafetensors((await fileOf('DIFFUSERS_UNET')).bytes);
    expect([...unet.keys()].sort()).toEqual([...base.unet.weights.keys()].sort());
    const [module, layer] = [...lora].find(([, l]) => l.up.some((x) => x !== 0))!;
    const merged = toFloat32(unet.get(`${module}.weight`)!);
    const original = base.unet.weights.get(`${module}.weight`)!;
    for (const [o, i] of [[0, 0], [layer.outFeatures - 1, layer.inFeatures - 1], [1, 2]]) {
      let delta = 0;
      for (let r = 0; r < layer.rank; r++) delta += layer.up[o * layer.rank + r] * layer.down[r * layer.inFeatures + i];
      expect(merged[o * layer.inFeatures + i]).toBeCloseTo(original[o * layer.inFeatures + i] + delta, 6);
    }
    expect(merged).not.toEqual(original);
    const untouched = [...base.unet.weights.keys()].find((key) => key.endsWith('conv_in.weight'))!;
    expect(toFloat32(unet.get(untouched)!)).toEqual(base.unet.weights.get(untouched));
  });

  it('packs a diffusers folder that the engine loads and that draws what the base model draws with the LoRA', async () => {
    const { made, bytes } = await fileOf('DIFFUSERS_PACK');
    expect(made.fileName).toBe('cup-v1.tar');
    const files = await untar(bytes, work.dir);
    for (const file of ['model_index.json', 'unet/config.json', 'unet/diffusion_pytorch_model.safetensors', 'vae/config.json', 'text_encoder/config.json', 'scheduler/scheduler_config.json']) {
      expect(files).toContain(`cup-v1/${file}`);
    }
    expect(files.some((f) => f.startsWith('cup-v1/tokenizer/'))).toBe(true);
    const packed = await loadStableDiffusionFrom(new FolderPackSource(path.join(work.dir, 'cup-v1')));
    const lora = parseLoraFile((await fileOf('DIFFUSERS_LORA')).bytes);
    const request = { prompt: 'a cup', steps: 2, seed: 5, guidanceScale: 3 };
    const fromPack = new Txt2ImgPipeline(packed, engine);
    const withLora = new Txt2ImgPipeline(base, engine);
    try {
      const a = (await fromPack.generate(request)).images;
      const b = (await withLora.generate({ ...request, lora: { weights: lora } })).images;
      const plain = (await withLora.generate(request)).images;
      expect(Math.max(...a.map((x, i) => Math.abs(x - b[i])))).toBeLessThan(1e-4);
      expect(Math.max(...a.map((x, i) => Math.abs(x - plain[i])))).toBeGreaterThan(1e-3); // the fine-tune is in the pack
    } finally {
      await fromPack.close();
      await withLora.close();
    }
  });

  it.skipIf(!hasDiffusers)('packs a folder StableDiffusionPipeline.from_pretrained loads', async () => {
    const script = `import sys, torch\nfrom diffusers import StableDiffusionPipeline\np = StableDiffusionPipeline.from_pretrained(sys.argv[1], safety_checker=None)\n`
      + `img = p('a cup', num_inference_steps=2, height=64, width=64, output_type='np').images\nprint(img.shape)`;
    const run = spawnSync('python3', ['-c', script, path.join(work.dir, 'cup-v1')], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/\(1, 64, 64, 3\)/);
  });

  it('is its owner’s only: others cannot export or download it; downloads need a key and expire', async () => {
    const made = (await ok(exportAs('DIFFUSERS_LORA', { modelId }))).exportWeights;
    expect(errorCode(await exportAs('DIFFUSERS_LORA', { modelId }, other))).toBe('NOT_FOUND');
    expect(errorCode(await exportAs('DIFFUSERS_LORA', { modelId }, admin))).toBe('FORBIDDEN');
    expect((await download(made.url, other)).status).toBe(404);
    expect((await download(made.url, null)).status).toBe(401);
    expect((await download('/exports/not-an-id')).status).toBe(404);
    // The public metamodel is no user's: admins export it.
    const meta = await createModel(platform, admin, { kind: 'META', name: 'public' });
    expect(errorCode(await exportAs('DIFFUSERS_UNET', { modelId: meta }, owner))).toBe('FORBIDDEN');
    expect((await ok(exportAs('DIFFUSERS_UNET', { modelId: meta }, admin))).exportWeights.fileName).toBe('public-v0-unet.safetensors');

    await platform.services.db.getRepository(WeightExport).update(made.id, { expiresAt: new Date(Date.now() - 1000) });
    const expired = await download(made.url);
    expect(expired.status).toBe(404);
    expect(((await expired.json()) as { errors: { extensions: { code: string } }[] }).errors[0].extensions.code).toBe('NOT_FOUND');
  });

  it('refuses what it cannot export, and writes nothing', async () => {
    const empty = { id: await createModel(platform, owner, { name: 'empty' }) };
    const count = () => platform.services.db.getRepository(WeightExport).count();
    const before = await count();
    const versionId = (await ok(gql(platform.url, 'query($id: ID!) { modelVersions(modelId: $id) { nodes { id } } }', { id: modelId }, owner))).modelVersions.nodes[0].id;
    const refusals = [
      await exportAs('DIFFUSERS_LORA', { modelId: empty.id }),
      await exportAs('KOHYA_LORA', { modelId, versionId }),
      await exportAs('DIFFUSERS_UNET', {}),
      await exportAs('DIFFUSERS_UNET', { versionId: '00000000-0000-4000-8000-000000000000' }),
    ];
    expect(refusals.map(errorCode)).toEqual(['BAD_USER_INPUT', 'BAD_USER_INPUT', 'BAD_USER_INPUT', 'NOT_FOUND']);
    expect(refusals[0].errors![0].message).toMatch(/no fine-tuned weights; export DIFFUSERS_UNET or DIFFUSERS_PACK/);
    expect(await count()).toBe(before);
    // The model without versions still exports the base model's UNet, by version id too for the fine-tuned one.
    expect((await ok(exportAs('DIFFUSERS_UNET', { modelId: empty.id }))).exportWeights).toMatchObject({ versionId: null, fileName: 'empty-v0-unet.safetensors' });
    expect((await ok(exportAs('DIFFUSERS_LORA', { versionId }))).exportWeights).toMatchObject({ versionId, modelId });
  });
});
