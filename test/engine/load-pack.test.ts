import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bindWeights, WeightBindingError } from '../../src/engine/weights/bind';
import { float16BitsToFloat32, float32ToFloat16Bits } from '../../src/engine/weights/dtype';
import { FolderPackSource, loadPack, PackError, type Pack } from '../../src/engine/weights/pack';
import { fromFloat32, toFloat32, writeSafetensors, type StoredTensor } from '../../src/engine/weights/safetensors';
import { hasFixtures, TINY_SD15 } from '../helpers/fixtures';

const PACK = join(TINY_SD15, 'pack');

describe.skipIf(!hasFixtures)('loadPack on tiny-sd15', () => {
  let pack: Pack;
  beforeAll(async () => {
    pack = await loadPack(new FolderPackSource(PACK));
  });

  it('parses model_index.json and every component config', () => {
    expect(pack.modelIndex._class_name).toBe('StableDiffusionPipeline');
    expect([...pack.components.keys()].sort()).toEqual(['scheduler', 'text_encoder', 'tokenizer', 'unet', 'vae']);
    const unet = pack.component('unet');
    expect([unet.library, unet.className]).toEqual(['diffusers', 'UNet2DConditionModel']);
    expect(unet.config._class_name).toBe('UNet2DConditionModel');
    expect(pack.component('vae').config._class_name).toBe('AutoencoderKL');
    expect(pack.component('text_encoder').className).toBe('CLIPTextModel');
    expect(pack.component('scheduler').config._class_name).toBe('PNDMScheduler');
    expect(pack.component('tokenizer').config).toHaveProperty('model_max_length');
  });

  it('finds each model weights file and none for the tokenizer and scheduler', async () => {
    expect(pack.component('unet').weightsFile).toBe('unet/diffusion_pytorch_model.safetensors');
    expect(pack.component('vae').weightsFile).toBe('vae/diffusion_pytorch_model.safetensors');
    expect(pack.component('text_encoder').weightsFile).toBe('text_encoder/model.safetensors');
    expect(pack.component('tokenizer').weightsFile).toBeNull();
    expect(() => pack.component('scheduler').weights()).toThrow(PackError);
    expect(() => pack.component('safety_checker')).toThrow(/pack has no component safety_checker; it has/);
  });

  it('loads UNet weights whose names and shapes follow its config', async () => {
    const { config } = pack.component('unet');
    const channels = config.block_out_channels as number[];
    const [inChannels, outChannels, crossDim] = [config.in_channels, config.out_channels, config.cross_attention_dim] as number[];
    const weights = await pack.component('unet').weights();
    const shape = (name: string) => weights.get(name)?.shape;
    expect(shape('conv_in.weight')).toEqual([channels[0], inChannels, 3, 3]);
    expect(shape('conv_out.weight')).toEqual([outChannels, channels[0], 3, 3]);
    expect(shape('time_embedding.linear_1.weight')).toEqual([channels[0] * 4, channels[0]]);
    expect(shape('down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight')).toEqual([channels[0], crossDim]);
    expect(shape(`down_blocks.1.resnets.${(config.layers_per_block as number) - 1}.conv2.weight`)).toEqual([channels[1], channels[1], 3, 3]);
    for (const tensor of weights.values()) expect(tensor.dtype).toBe('F32');
  });

  it('binds the stored UNet weights and names what does not fit', async () => {
    const stored = await pack.component('unet').weights();
    const expected = new Map([...stored].map(([name, tensor]) => [name, tensor.shape]));
    const bound = bindWeights(expected, stored);
    expect(bound.size).toBe(stored.size);
    expect(bound.get('conv_in.weight')).toEqual(toFloat32(stored.get('conv_in.weight')!));

    const problems = (shapes: Map<string, number[]>) => {
      const error = (() => {
        try {
          bindWeights(shapes, stored);
        } catch (e) {
          return e;
        }
      })();
      expect(error).toBeInstanceOf(WeightBindingError);
      return (error as WeightBindingError).problems;
    };
    expect(problems(new Map(expected).set('conv_in.lora.weight', [4]))).toEqual(['missing conv_in.lora.weight']);
    const fewer = new Map(expected);
    fewer.delete('conv_out.bias');
    expect(problems(fewer)).toEqual(['unexpected conv_out.bias']);
    const [c, i] = expected.get('conv_in.weight')!;
    expect(problems(new Map(expected).set('conv_in.weight', [c, i, 1, 1]))).toEqual([
      `conv_in.weight has shape [${c},${i},3,3] but the model expects [${c},${i},1,1]`,
    ]);
  });
});

describe.skipIf(!hasFixtures)('a rewritten copy of tiny-sd15', () => {
  let dir: string;
  let original: Pack;
  let copy: Pack;
  const models = ['unet', 'vae', 'text_encoder'];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pack-f16-'));
    await cp(PACK, dir, { recursive: true });
    original = await loadPack(new FolderPackSource(PACK));
    for (const name of models) {
      const component = original.component(name);
      const f16 = new Map<string, StoredTensor>();
      for (const [key, tensor] of await component.weights()) f16.set(key, fromFloat32(toFloat32(tensor), tensor.shape, 'F16'));
      await writeSafetensors(join(dir, component.weightsFile!), f16);
    }
    // The text encoder as a sharded checkpoint: two files and an index naming each tensor's file.
    const textEncoder = join(dir, 'text_encoder');
    const tensors = [...(await original.component('text_encoder').weights())];
    const half = Math.ceil(tensors.length / 2);
    const shards = [tensors.slice(0, half), tensors.slice(half)];
    const weightMap: Record<string, string> = {};
    for (const [index, shard] of shards.entries()) {
      const file = `model-0000${index + 1}-of-00002.safetensors`;
      await writeSafetensors(join(textEncoder, file), new Map(shard));
      for (const [key] of shard) weightMap[key] = file;
    }
    await writeFile(join(textEncoder, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    await rm(join(textEncoder, 'model.safetensors'));
    copy = await loadPack(new FolderPackSource(dir));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('binds F16 weights to float32 values equal to the rounded originals', async () => {
    for (const name of ['unet', 'vae']) {
      const before = await original.component(name).weights();
      const after = await copy.component(name).weights();
      for (const tensor of after.values()) expect(tensor.dtype).toBe('F16');
      const bound = bindWeights(new Map([...before].map(([key, tensor]) => [key, tensor.shape])), after);
      for (const [key, widened] of bound) {
        const exact = toFloat32(before.get(key)!);
        for (let i = 0; i < exact.length; i++) {
          const rounded = float16BitsToFloat32(float32ToFloat16Bits(exact[i]));
          // Round to nearest moves a value by at most half a unit in the last place: 2^-11 relative,
          // or 2^-25 absolute among subnormals.
          const bound = Math.max(Math.abs(exact[i]) * 2 ** -11, 2 ** -25);
          if (widened[i] !== rounded || !(Math.abs(widened[i] - exact[i]) <= bound)) {
            expect.fail(`${name} ${key}[${i}]: ${widened[i]}, original ${exact[i]}, rounded ${rounded}`);
          }
        }
      }
    }
  });

  it('reads a sharded checkpoint through its index', async () => {
    const textEncoder = copy.component('text_encoder');
    expect(textEncoder.weightsFile).toBe('text_encoder/model.safetensors.index.json');
    const before = await original.component('text_encoder').weights();
    const after = await textEncoder.weights();
    expect(after.size).toBe(before.size);
    for (const [key, tensor] of before) {
      const read = after.get(key)!;
      expect([read.dtype, read.shape]).toEqual([tensor.dtype, tensor.shape]);
      expect(Buffer.compare(read.bytes, tensor.bytes)).toBe(0);
    }
  });

  it('names a shard that lacks a tensor its index places there', async () => {
    const index = join(dir, 'text_encoder', 'model.safetensors.index.json');
    const files = (await readdir(join(dir, 'text_encoder'))).filter((f) => f.startsWith('model-'));
    await writeFile(index, JSON.stringify({ weight_map: { 'not.a.tensor': files[0] } }));
    await expect(copy.component('text_encoder').weights()).rejects.toThrow(`pack file text_encoder/${files[0]} lacks not.a.tensor`);
  });
});

describe('loadPack errors', () => {
  it('names a missing model_index.json, a broken config and a path outside the pack', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pack-bad-'));
    try {
      const source = new FolderPackSource(dir);
      await expect(loadPack(source)).rejects.toMatchObject({ code: 'MISSING_FILE', message: 'pack has no model_index.json' });
      await writeFile(join(dir, 'model_index.json'), JSON.stringify({ _class_name: 'X', unet: ['diffusers', 'UNet2DConditionModel'] }));
      await expect(loadPack(source)).rejects.toThrow(/pack component unet has none of config.json/);
      await mkdir(join(dir, 'unet'));
      await writeFile(join(dir, 'unet', 'config.json'), '{ not json');
      await expect(loadPack(source)).rejects.toMatchObject({ code: 'INVALID_FILE' });
      await expect(source.read('../secret')).rejects.toMatchObject({ code: 'INVALID_PATH' });
      await expect(source.read('/etc/passwd')).rejects.toMatchObject({ code: 'INVALID_PATH' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
