import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Graph } from '../../src/engine/graph';
import { buildUNet, parseUNetConfig, type UNetConfig } from '../../src/engine/models/unet';
import { readSafetensors, type StoredTensor, toFloat32, toIntegers } from '../../src/engine/weights/safetensors';
import { hasFixtures, loadReference, relativeL2, TINY_SD15 } from '../helpers/fixtures';
import { bindStored, runGraph } from '../helpers/models';

const UNET = join(TINY_SD15, 'pack', 'unet');
const packConfig = () => JSON.parse(readFileSync(join(UNET, 'config.json'), 'utf8'));

/** A UNet graph with inputs sample / timesteps / encoder_hidden_states and output `out`. */
function unetGraph(config: UNetConfig, sample: number[], tokens: number): Graph {
  const g = new Graph('unet');
  const out = buildUNet(g, config, g.input('sample', 'float32', sample), g.input('timesteps', 'int64', [sample[0]]),
    g.input('encoder_hidden_states', 'float32', [sample[0], tokens, config.crossAttentionDim[0]]));
  g.output(out, 'out');
  return g;
}

function feeds(tensors: Map<string, StoredTensor>): Record<string, ort.Tensor> {
  const sample = tensors.get('unet.sample')!;
  const ehs = tensors.get('unet.encoder_hidden_states')!;
  const t = tensors.get('unet.timesteps')!;
  return {
    sample: new ort.Tensor('float32', toFloat32(sample), sample.shape),
    timesteps: new ort.Tensor('int64', BigInt64Array.from(toIntegers(t), BigInt), t.shape),
    encoder_hidden_states: new ort.Tensor('float32', toFloat32(ehs), ehs.shape),
  };
}

describe.skipIf(!hasFixtures)('UNet2DConditionModel on the tiny-sd15 pack', () => {
  it('matches diffusers unet.out (rel L2 < 1e-4)', async () => {
    const { tensors } = await loadReference();
    const g = unetGraph(parseUNetConfig(packConfig()), tensors.get('unet.sample')!.shape, 77);
    bindStored(g, await readSafetensors(join(UNET, 'diffusion_pytorch_model.safetensors')));
    const out = await runGraph(g, feeds(tensors));
    const error = relativeL2(out.out.data as Float32Array, toFloat32(tensors.get('unet.out')!));
    console.log('unet rel L2', error);
    expect(error).toBeLessThan(1e-4);
  });
});
