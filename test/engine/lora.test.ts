import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { Graph, serialize } from '../../src/engine/graph';
import { LoraError, type LoraLayer, LoraSlots, parseUNetLora } from '../../src/engine/models/lora';
import { expectedWeights } from '../../src/engine/models/params';
import { buildUNet, parseUNetConfig } from '../../src/engine/models/unet';
import { type TensorData } from '../../src/engine/runtime';
import { bindWeights } from '../../src/engine/weights/bind';
import { fromFloat32, readSafetensors, type StoredTensor, toFloat32, toIntegers } from '../../src/engine/weights/safetensors';
import { hasFixtures, loadReference, relativeL2, TINY_SD15 } from '../helpers/fixtures';

const UNET = join(TINY_SD15, 'pack', 'unet');

/** The tiny UNet with LoRA slots of `rank` on `targets`, loaded into one session. */
async function loraSession(rank: number, targets?: string[]) {
  const config = parseUNetConfig(JSON.parse(readFileSync(join(UNET, 'config.json'), 'utf8')));
  const g = new Graph('unet_lora');
  const slots = new LoraSlots(g, rank, targets);
  const out = buildUNet(g, config, g.input('sample', 'float32', [2, 4, 16, 16]), g.input('timesteps', 'int64', [2]),
    g.input('encoder_hidden_states', 'float32', [2, 77, 32]), { linear: slots.linear });
  g.output(out, 'out');
  const base = await readSafetensors(join(UNET, 'diffusion_pytorch_model.safetensors'));
  // The slots are the only weights the checkpoint does not provide.
  const expected = expectedWeights(g);
  for (const name of slots.names()) expected.delete(name);
  for (const [name, data] of bindWeights(expected, base)) g.weights.get(name)!.data = data;
  const session = await ort.InferenceSession.create(serialize(g, { weightsAsInputs: slots.names() }));
  return { session, slots };
}

const ortFeeds = (feeds: Record<string, TensorData>) =>
  Object.fromEntries(Object.entries(feeds).map(([name, t]) => [name, new ort.Tensor(t.dtype, t.data as Float32Array, t.dims)]));

describe.skipIf(!hasFixtures)('LoRA on the tiny-sd15 UNet', () => {
  let tensors: Map<string, StoredTensor>;
  let lora: Map<string, LoraLayer>;
  let inputs: Record<string, ort.Tensor>;
  beforeAll(async () => {
    tensors = (await loadReference()).tensors;
    lora = parseUNetLora(await readSafetensors(join(TINY_SD15, 'lora_before.safetensors')));
    const t = tensors.get('unet.timesteps')!;
    inputs = {
      sample: new ort.Tensor('float32', toFloat32(tensors.get('unet.sample')!), [2, 4, 16, 16]),
      timesteps: new ort.Tensor('int64', BigInt64Array.from(toIntegers(t), BigInt), t.shape),
      encoder_hidden_states: new ort.Tensor('float32', toFloat32(tensors.get('unet.encoder_hidden_states')!), [2, 77, 32]),
    };
  });
  const run = async (session: ort.InferenceSession, feeds: Record<string, TensorData>) =>
    (await session.run({ ...inputs, ...ortFeeds(feeds) })).out.data as Float32Array;

  it('reads the diffusers-format file: rank-4 A/B on every attention projection', () => {
    expect(lora.size).toBe(48);
    for (const [module, layer] of lora) {
      expect(module).toMatch(/\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$/);
      expect(layer.rank).toBe(4);
      expect(layer.alpha).toBeUndefined();
    }
  });

  it('matches diffusers lora.unet.out and, in the same session, unet.out without it', async () => {
    const { session, slots } = await loraSession(4);
    expect(slots.layers.size).toBe(48);
    const withLora = await run(session, slots.feeds(lora, 1));
    expect(relativeL2(withLora, toFloat32(tensors.get('lora.unet.out')!))).toBeLessThan(1e-4);
    const plain = toFloat32(tensors.get('unet.out')!);
    expect(relativeL2(await run(session, slots.feeds(null)), plain)).toBeLessThan(1e-4);
    expect(relativeL2(await run(session, slots.feeds(lora, 0)), plain)).toBeLessThan(1e-4);
    // the LoRA does change the output: the checks above could not pass by ignoring it
    expect(relativeL2(withLora, plain)).toBeGreaterThan(1e-2);
    await session.release();
  });

  it('pads a lower-rank LoRA into wider slots exactly, and honours peft names with alpha', async () => {
    const { session, slots } = await loraSession(8);
    const expected = toFloat32(tensors.get('lora.unet.out')!);
    expect(relativeL2(await run(session, slots.feeds(lora, 1)), expected)).toBeLessThan(1e-4);
    // the same LoRA as peft writes it, alpha 8 on rank 4 (factor 2), applied at scale 0.5
    const peft = new Map<string, StoredTensor>();
    for (const [module, layer] of lora) {
      peft.set(`unet.${module}.lora_A.weight`, fromFloat32(layer.down, [layer.rank, layer.inFeatures]));
      peft.set(`unet.${module}.lora_B.weight`, fromFloat32(layer.up, [layer.outFeatures, layer.rank]));
      peft.set(`unet.${module}.alpha`, fromFloat32(Float32Array.of(8), []));
    }
    expect(relativeL2(await run(session, slots.feeds(parseUNetLora(peft), 0.5)), expected)).toBeLessThan(1e-4);
    await session.release();
  });

  it('refuses LoRAs that do not fit the slots, naming the layer', async () => {
    const g = new Graph();
    const slots = new LoraSlots(g, 2, ['to_q', 'to_k']);
    buildUNet(g, parseUNetConfig(JSON.parse(readFileSync(join(UNET, 'config.json'), 'utf8'))), g.input('s', 'float32', [1, 4, 16, 16]),
      g.input('t', 'int64', [1]), g.input('e', 'float32', [1, 77, 32]), { linear: slots.linear });
    expect(() => slots.feeds(new Map([...lora].filter(([m]) => m.endsWith('to_q'))))).toThrow(/rank 4, the graph's slots hold 2/);
    const wide = new LoraSlots(new Graph(), 8, ['to_v']);
    expect(() => wide.feeds(lora)).toThrow(LoraError);
    expect(() => slots.feeds(new Map([...lora].filter(([m]) => m.endsWith('to_v'))))).toThrow(/attn1\.to_v, which has no slot/);
    const stored = await readSafetensors(join(TINY_SD15, 'lora_before.safetensors'));
    const half = new Map([...stored].filter(([key]) => !key.includes('attn1.to_q.lora.up')));
    expect(() => parseUNetLora(half)).toThrow(/attn1\.to_q lacks its up \(B\) matrix/);
    expect(() => parseUNetLora(new Map([['lora_unet_down_blocks_0_attn1_to_q.lora_down.weight', stored.values().next().value!]])))
      .toThrow(/unrecognized LoRA key lora_unet_down_blocks_0/);
  });
});
