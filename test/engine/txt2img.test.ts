import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Graph } from '../../src/engine/graph';
import { buildClipTextEncoder, parseClipTextConfig } from '../../src/engine/models/clip-text';
import { expectedWeights } from '../../src/engine/models/params';
import { buildUNet, parseUNetConfig } from '../../src/engine/models/unet';
import { buildVaeDecoder, buildVaeEncoder, parseVaeConfig } from '../../src/engine/models/vae';
import { openGraphSession } from '../../src/engine/pipelines/sessions';
import { attachWeights, loadStableDiffusion } from '../../src/engine/pipelines/stable-diffusion';
import { encodePngs, Txt2ImgError, Txt2ImgPipeline, type Txt2ImgProgress } from '../../src/engine/pipelines/txt2img';
import { EngineWorker } from '../../src/engine/runtime';
import { Rng } from '../../src/engine/random';
import { ClipTokenizer, loadClipTokenizer } from '../../src/engine/tokenizer';
import { WeightBindingError } from '../../src/engine/weights/bind';
import { float16BitsToFloat32, float32ToFloat16Bits } from '../../src/engine/weights/dtype';
import { FolderPackSource, loadPack, type PackSource } from '../../src/engine/weights/pack';
import { fromFloat32, serializeSafetensors, type StoredTensor, toFloat32 } from '../../src/engine/weights/safetensors';
import { hasFixtures, loadReference, relativeL2, TINY_SD15 } from '../helpers/fixtures';

describe.skipIf(!hasFixtures)('txt2img on the tiny-sd15 pack', () => {
  let worker: EngineWorker;
  let pipeline: Txt2ImgPipeline;
  let reference: Awaited<ReturnType<typeof loadReference>>;

  beforeAll(async () => {
    reference = await loadReference();
    const pack = await loadPack(new FolderPackSource(join(TINY_SD15, 'pack')));
    const models = await loadStableDiffusion(pack, await loadClipTokenizer(join(TINY_SD15, 'pack', 'tokenizer')));
    worker = new EngineWorker();
    pipeline = new Txt2ImgPipeline(models, worker);
  });

  afterAll(async () => {
    await pipeline?.close();
    await worker?.close();
  });

  for (const scheduler of ['pndm', 'ddim', 'euler', 'dpmpp_2m'] as const) {
    it(`matches diffusers' 10-step ${scheduler} pipeline (rel L2 < 1e-3)`, async () => {
      const settings = reference.json.pipeline.find((p: { scheduler: string }) => p.scheduler === scheduler);
      const expected = reference.tensors.get(`pipeline.${scheduler}.image`)!;
      const progress: Txt2ImgProgress[] = [];
      const result = await pipeline.generate({
        prompt: settings.prompt,
        negativePrompt: settings.negative_prompt,
        guidanceScale: settings.guidance_scale,
        steps: settings.num_inference_steps,
        scheduler,
        // The reference swapped schedulers as diffusers' from_config does for a scheduler built with
        // defaults: each took its own default timestep_spacing. reference.json lists each resolved config.
        schedulerConfig: reference.json.schedulers[scheduler].config,
        latents: toFloat32(reference.tensors.get(`pipeline.${scheduler}.latents`)!),
        width: expected.shape[2],
        height: expected.shape[1],
      }, { onStep: (p) => progress.push(p) });
      expect([result.count, result.height, result.width, result.channels]).toEqual(expected.shape);
      expect(relativeL2(result.images, toFloat32(expected))).toBeLessThan(1e-3);
      // Progress counts the steps asked for, each once, though PNDM evaluates one timestep twice.
      const steps = settings.num_inference_steps as number;
      const timesteps = reference.json.schedulers[scheduler].steps_10.timesteps as number[];
      expect(progress.map((p) => p.step)).toEqual(Array.from({ length: steps }, (_, i) => i + 1));
      expect(progress.every((p) => p.steps === steps)).toBe(true);
      expect(progress.map((p) => p.timestep)).toEqual(timesteps.slice(timesteps.length - steps));
    });
  }

  it('writes PNGs of the [0, 1] images, 8 bits rounded', async () => {
    const result = await pipeline.generate({ prompt: 'a lnl painting of a sks dog', steps: 4, seed: 42, numImages: 2 });
    expect([result.count, result.height, result.width, result.channels]).toEqual([2, 32, 32, 3]);
    const pngs = await encodePngs(result);
    expect(pngs).toHaveLength(2);
    writeFileSync(join(tmpdir(), 'txt2img-tiny-sd15.png'), pngs[1]);
    const { data, info } = await sharp(pngs[1]).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([32, 32, 3]);
    const second = result.images.subarray(32 * 32 * 3);
    expect(Array.from(data)).toEqual(Array.from(second, (x) => Math.round(x * 255)));
  });

  it('reproduces an image from its seed, and the seed changes it', async () => {
    const request = { prompt: 'a dog', steps: 3, seed: 7, scheduler: 'euler_ancestral' as const };
    const first = await pipeline.generate(request);
    const again = await pipeline.generate(request);
    const other = await pipeline.generate({ ...request, seed: 8 });
    expect(again.images).toEqual(first.images);
    expect(first.seed).toBe(7);
    expect(relativeL2(other.images, first.images)).toBeGreaterThan(1e-3);
    // Without a seed one is drawn and reported, and it reproduces the run.
    const drawn = await pipeline.generate({ ...request, seed: undefined });
    expect((await pipeline.generate({ ...request, seed: drawn.seed })).images).toEqual(drawn.images);
  });

  it('computes each image of a batch as if alone', async () => {
    const latents = toFloat32(reference.tensors.get('pipeline.ddim.latents')!);
    const pair = new Float32Array(latents.length * 2);
    pair.set(latents.map((x) => -x));
    pair.set(latents, latents.length);
    const request = { prompt: 'a dog', negativePrompt: 'blurry', steps: 3, scheduler: 'ddim' as const };
    const both = await pipeline.generate({ ...request, latents: pair, numImages: 2 });
    const alone = await pipeline.generate({ ...request, latents });
    expect(relativeL2(both.images.subarray(alone.images.length), alone.images)).toBeLessThan(1e-5);
    expect(relativeL2(both.images.subarray(0, alone.images.length), alone.images)).toBeGreaterThan(1e-2);
  });

  it('applies the guidance scale, and skips the unconditional pass at 1', async () => {
    const latents = toFloat32(reference.tensors.get('pipeline.ddim.latents')!);
    const request = { prompt: 'a dog', negativePrompt: 'blurry', steps: 3, scheduler: 'ddim' as const, latents };
    const one = await pipeline.generate({ ...request, guidanceScale: 1 });
    const oneOtherNegative = await pipeline.generate({ ...request, guidanceScale: 1, negativePrompt: 'sharp' });
    const guided = await pipeline.generate({ ...request, guidanceScale: 7.5 });
    expect(oneOtherNegative.images).toEqual(one.images);
    expect(relativeL2(guided.images, one.images)).toBeGreaterThan(1e-3);
  });

  it('stops between steps when its signal aborts', async () => {
    const controller = new AbortController();
    const seen: number[] = [];
    const run = pipeline.generate({ prompt: 'a dog', steps: 10, seed: 1, scheduler: 'ddim' }, {
      signal: controller.signal,
      onStep: ({ step }) => {
        seen.push(step);
        if (step === 3) controller.abort();
      },
    });
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(seen).toEqual([1, 2, 3]);
  });

  it('runs a graph the same from external data files as inline', async () => {
    const { vae } = pipeline.models;
    const g = new Graph('decoder');
    g.output(buildVaeDecoder(g, vae.config, g.input('latents', 'float32', [1, 4, 16, 16])), 'decoded');
    attachWeights(g, vae.weights);
    const latents = toFloat32(reference.tensors.get('vae.latents')!);
    const scratch = mkdtempSync(join(tmpdir(), 'sessions-'));
    try {
      const outputs = [];
      for (const limit of [Infinity, 0]) {
        const session = await openGraphSession(worker, g, scratch, { inlineWeightBytes: limit });
        outputs.push((await worker.run(session, { latents: { dtype: 'float32', dims: [1, 4, 16, 16], data: latents.slice() } })).decoded.data);
        await worker.release(session);
      }
      expect(readdirSync(scratch).some((file) => file.endsWith('.onnx.data'))).toBe(true);
      expect(outputs[1]).toEqual(outputs[0]);
      expect(relativeL2(outputs[0] as Float32Array, toFloat32(reference.tensors.get('vae.decoded')!))).toBeLessThan(1e-4);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });

  it('rejects bad requests with a clear error', async () => {
    await expect(pipeline.generate({ prompt: 'a dog', width: 30 })).rejects.toThrow(Txt2ImgError);
    await expect(pipeline.generate({ prompt: 'a dog', width: 36 })).rejects.toThrow(/multiple of 8/);
    await expect(pipeline.generate({ prompt: 'a dog', steps: 0 })).rejects.toThrow(/steps/);
    await expect(pipeline.generate({ prompt: 'a dog', scheduler: 'heun' as 'ddim' })).rejects.toThrow(/scheduler/);
    await expect(pipeline.generate({ prompt: 'a dog', latents: new Float32Array(10) })).rejects.toThrow(/latents hold 10 values/);
  });
});

/** A pack held in memory, as a PackSource: file contents by relative path. */
class MemoryPackSource implements PackSource {
  constructor(readonly files: Map<string, Uint8Array>) {}
  async read(path: string): Promise<Uint8Array> {
    const bytes = this.files.get(path);
    if (!bytes) throw new Error(`no ${path}`);
    return bytes;
  }
  async exists(path: string): Promise<boolean> {
    return this.files.has(path);
  }
}

const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

/** Random weights for every tensor a graph declares, stored as `dtype` (F32 values rounded to half when `roundToHalf`). */
function randomCheckpoint(g: Graph, seed: number, dtype: 'F32' | 'F16', roundToHalf = false): Map<string, StoredTensor> {
  const rng = new Rng(seed);
  const tensors = new Map<string, StoredTensor>();
  for (const [name, shape] of expectedWeights(g)) {
    const fanIn = shape.length > 1 ? shape.slice(1).reduce((a, b) => a * b, 1) : 1;
    const isNormGain = /norm/.test(name) && name.endsWith('.weight');
    let values = rng.normalFloat32(shape.reduce((a, b) => a * b, 1)).map((x) => (isNormGain ? 1 + 0.1 * x : x / Math.sqrt(fanIn)));
    if (roundToHalf) values = values.map((x) => float16BitsToFloat32(float32ToFloat16Bits(x)));
    tensors.set(name, fromFloat32(values, [...shape], dtype));
  }
  return tensors;
}

describe.skipIf(!hasFixtures)('txt2img on a generated SD 2.x-style pack', () => {
  // A gelu text encoder saved by transformers 4 (text_model.* keys), a three-level UNet with linear
  // projections and per-block heads, a three-level VAE with legacy attention names, `!` as the pad token,
  // DDIM as the pack's scheduler.
  const textConfig = {
    architectures: ['CLIPTextModel'], hidden_act: 'gelu', hidden_size: 24, intermediate_size: 40, num_attention_heads: 3,
    num_hidden_layers: 2, max_position_embeddings: 77, vocab_size: 49408, layer_norm_eps: 1e-5, eos_token_id: 49407,
  };
  const unetConfig = {
    block_out_channels: [16, 32, 32], down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'], layers_per_block: 1, norm_num_groups: 8,
    attention_head_dim: [4, 8, 8], use_linear_projection: true, cross_attention_dim: 24, sample_size: 8,
  };
  const vaeConfig = {
    block_out_channels: [8, 16, 16], down_block_types: Array(3).fill('DownEncoderBlock2D'),
    up_block_types: Array(3).fill('UpDecoderBlock2D'), layers_per_block: 1, norm_num_groups: 4, latent_channels: 4,
    scaling_factor: 0.13025,
  };
  let tokenizer: ClipTokenizer;
  beforeAll(() => {
    const tokenizerDir = join(TINY_SD15, 'pack', 'tokenizer');
    tokenizer = ClipTokenizer.fromFiles({
      vocabJson: readFileSync(join(tokenizerDir, 'vocab.json'), 'utf8'),
      mergesTxt: readFileSync(join(tokenizerDir, 'merges.txt'), 'utf8'),
      tokenizerConfigJson: JSON.stringify({ model_max_length: 77, pad_token: '!' }),
    });
  });

  function generatedPack(dtype: 'F32' | 'F16', roundToHalf = false, vae: Record<string, unknown> = vaeConfig): PackSource {
    const text = new Graph();
    buildClipTextEncoder(text, parseClipTextConfig(textConfig), text.input('ids', 'int64', [1, 77]), { prefix: 'text_model' });
    const unet = new Graph();
    const parsedUnet = parseUNetConfig(unetConfig);
    buildUNet(unet, parsedUnet, unet.input('x', 'float32', [1, 4, 8, 8]), unet.input('t', 'float32', [1]), unet.input('c', 'float32', [1, 77, 24]));
    const autoencoder = new Graph();
    const parsedVae = parseVaeConfig(vaeConfig);
    buildVaeEncoder(autoencoder, parsedVae, autoencoder.input('image', 'float32', [1, 3, 32, 32]));
    buildVaeDecoder(autoencoder, parsedVae, autoencoder.input('latents', 'float32', [1, 4, 8, 8]));
    return new MemoryPackSource(new Map([
      ['model_index.json', json({
        _class_name: 'StableDiffusionPipeline', scheduler: ['diffusers', 'DDIMScheduler'], text_encoder: ['transformers', 'CLIPTextModel'],
        tokenizer: ['transformers', 'CLIPTokenizer'], unet: ['diffusers', 'UNet2DConditionModel'], vae: ['diffusers', 'AutoencoderKL'],
      })],
      ['scheduler/scheduler_config.json', new Uint8Array(readFileSync(join(TINY_SD15, 'pack', 'scheduler', 'scheduler_config.json')))],
      ['tokenizer/tokenizer_config.json', json({ model_max_length: 77, pad_token: '!' })],
      ['text_encoder/config.json', json(textConfig)],
      // As transformers < 4.31 saved it: with the position_ids buffer.
      ['text_encoder/model.safetensors', serializeSafetensors(new Map([...randomCheckpoint(text, 1, dtype, roundToHalf),
        ['text_model.embeddings.position_ids', { dtype: 'I64', shape: [1, 77], bytes: new Uint8Array(BigInt64Array.from({ length: 77 }, (_, i) => BigInt(i)).buffer) }]]))],
      ['unet/config.json', json(unetConfig)],
      ['unet/diffusion_pytorch_model.safetensors', serializeSafetensors(randomCheckpoint(unet, 2, dtype, roundToHalf))],
      ['vae/config.json', json(vae)],
      // As diffusers < 0.14 saved it: the mid-block attention as query/key/value/proj_attn.
      ['vae/diffusion_pytorch_model.safetensors', serializeSafetensors(new Map([...randomCheckpoint(autoencoder, 3, dtype, roundToHalf)]
        .map(([name, tensor]) => [name.replace('.to_q.', '.query.').replace('.to_k.', '.key.').replace('.to_v.', '.value.').replace('.to_out.0.', '.proj_attn.'), tensor])))],
    ]));
  }

  it('generates images whose shapes follow the configs; F16 weights act as their rounded F32 values', async () => {
    const worker = new EngineWorker();
    const run = async (source: PackSource) => {
      const pipeline = new Txt2ImgPipeline(await loadStableDiffusion(await loadPack(source), tokenizer), worker);
      try {
        return await pipeline.generate({ prompt: 'a photo of a sks dog', negativePrompt: 'blurry', steps: 3, seed: 11, numImages: 2 });
      } finally {
        await pipeline.close();
      }
    };
    try {
      const half = await run(generatedPack('F16'));
      // sample_size 8 latents x VAE factor 4 (three levels) = 32 pixels.
      expect([half.count, half.height, half.width, half.channels]).toEqual([2, 32, 32, 3]);
      expect(half.images.every((x) => x >= 0 && x <= 1)).toBe(true);
      expect(new Set(half.images).size).toBeGreaterThan(100);
      expect((await run(generatedPack('F32', true))).images).toEqual(half.images);
      expect(relativeL2((await run(generatedPack('F32'))).images, half.images)).toBeGreaterThan(0);
    } finally {
      await worker.close();
    }
  });

  it('refuses a pack whose weights do not fit its configs, naming the tensors', async () => {
    const pack = await loadPack(generatedPack('F32', false, { ...vaeConfig, latent_channels: 8 }));
    const loading = loadStableDiffusion(pack, tokenizer);
    await expect(loading).rejects.toThrow(WeightBindingError);
    await expect(loading).rejects.toThrow(/encoder\.conv_out\.weight has shape \[8,16,3,3\] but the model expects \[16,16,3,3\]/);
  });
});
