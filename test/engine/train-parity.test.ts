import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildGradientGraph, compile, compileTrainStep, FlatLayout } from '../../src/engine/autodiff';
import { add, chunk, Graph, mul, reduceMean, sub, type Tensor } from '../../src/engine/graph';
import { LoraSlots, parseUNetLora } from '../../src/engine/models/lora';
import { expectedWeights } from '../../src/engine/models/params';
import { buildUNet, parseUNetConfig, type UNetOptions } from '../../src/engine/models/unet';
import { createScheduler } from '../../src/engine/schedulers';
import { bindWeights } from '../../src/engine/weights/bind';
import { readSafetensors, type StoredTensor, toFloat32, toIntegers } from '../../src/engine/weights/safetensors';
import { hasFixtures, loadReference, relativeL2, TINY_SD15 } from '../helpers/fixtures';
import { bindStored, runModel } from '../helpers/models';

const PACK = join(TINY_SD15, 'pack');
const json = (path: string) => JSON.parse(readFileSync(join(PACK, path), 'utf8'));

/**
 * DreamBooth with prior preservation on one batch: row 0 the instance, row 1 the class prompt, epsilon target,
 * loss = mse(instance) + prior_loss_weight * mse(prior). Inputs: the noisy latents (DDPM forward process, computed
 * on the host as the trainer does), timesteps, encoder hidden states and the noise.
 */
function dreamboothLoss(priorLossWeight: number, options: UNetOptions = {}, slotsFor?: (g: Graph) => LoraSlots) {
  const g = new Graph('dreambooth');
  const slots = slotsFor?.(g);
  const noisy = g.input('noisy_latents', 'float32', [2, 4, 16, 16]);
  const noise = g.input('noise', 'float32', [2, 4, 16, 16]);
  const pred = buildUNet(g, parseUNetConfig(json('unet/config.json')), noisy, g.input('timesteps', 'int64', [2]),
    g.input('encoder_hidden_states', 'float32', [2, 77, 32]), slots ? { linear: slots.linear } : options);
  const mse = (a: Tensor, b: Tensor) => reduceMean(mul(sub(a, b), sub(a, b)), [0, 1, 2, 3], false);
  const [predInstance, predPrior] = chunk(pred, 2, 0);
  const [noiseInstance, noisePrior] = chunk(noise, 2, 0);
  const loss = add(mse(predInstance, noiseInstance), mul(mse(predPrior, noisePrior), priorLossWeight));
  return { g, loss, slots };
}

describe.skipIf(!hasFixtures)('DreamBooth training parity on tiny-sd15', () => {
  let tensors: Map<string, StoredTensor>;
  let reference: any;
  let batch: Record<string, ort.Tensor>;
  let unetWeights: Map<string, StoredTensor>;
  beforeAll(async () => {
    ({ json: reference, tensors } = await loadReference());
    unetWeights = await readSafetensors(join(PACK, 'unet', 'diffusion_pytorch_model.safetensors'));
    const latents = Float64Array.from(toFloat32(tensors.get('train.latents')!));
    const noise = toFloat32(tensors.get('train.noise')!);
    const timesteps = toIntegers(tensors.get('train.timesteps')!);
    const ddpm = createScheduler('ddpm', json('scheduler/scheduler_config.json'));
    const noisy = Float32Array.from(ddpm.addNoise(latents, Float64Array.from(noise), timesteps));
    batch = {
      noisy_latents: new ort.Tensor('float32', noisy, [2, 4, 16, 16]),
      noise: new ort.Tensor('float32', noise, [2, 4, 16, 16]),
      timesteps: new ort.Tensor('int64', BigInt64Array.from(timesteps, BigInt), [2]),
      encoder_hidden_states: new ort.Tensor('float32', toFloat32(tensors.get('train.encoder_hidden_states')!), [2, 77, 32]),
    };
  });

  it('matches the loss and every full-parameter gradient (rel L2 < 1e-4 each)', async () => {
    const { g, loss } = dreamboothLoss(reference.train_full.prior_loss_weight);
    bindStored(g, unetWeights);
    const wrt = [...unetWeights.keys()];
    const out = await runModel(compile(buildGradientGraph({ graph: g, loss, wrt, wrtAsInputs: false })).model, batch);
    expect(Math.abs((out.loss.data as Float32Array)[0] - reference.train_full.loss) / reference.train_full.loss).toBeLessThan(1e-4);
    const errors = wrt.map((name) => [name, relativeL2(out[`grad.${name}`].data as Float32Array, toFloat32(tensors.get(`grad_full.${name}`)!))] as const);
    expect(errors.length).toBe([...tensors.keys()].filter((k) => k.startsWith('grad_full.')).length);
    expect(errors.filter(([, error]) => !(error < 1e-4))).toEqual([]);
  });

  it('matches the LoRA gradients and the LoRA after one AdamW step (abs 1e-5)', async () => {
    const { train_lora: config } = reference;
    const before = parseUNetLora(await readSafetensors(join(TINY_SD15, 'lora_before.safetensors')));
    const after = parseUNetLora(await readSafetensors(join(TINY_SD15, 'lora_after_1step.safetensors')));
    const build = () => {
      const built = dreamboothLoss(reference.train_full.prior_loss_weight, {}, (g) => new LoraSlots(g, config.rank, config.targets));
      const slots = built.slots!;
      const initial = slots.values(before);
      const frozen = expectedWeights(built.g);
      for (const [name, data] of initial) {
        built.g.weights.get(name)!.data = data;
        frozen.delete(name);
      }
      for (const [name, data] of bindWeights(frozen, unetWeights)) built.g.weights.get(name)!.data = data;
      return { ...built, slots, initial, trainable: [...initial.keys()] };
    };
    // alpha / rank scaling, as peft applies it
    const scale = new ort.Tensor('float32', Float32Array.of(config.alpha / config.rank), []);

    const grads = build();
    const out = await runModel(
      compile(buildGradientGraph({ graph: grads.g, loss: grads.loss, wrt: grads.trainable, wrtAsInputs: false })).model,
      { ...batch, lora_scale: scale });
    expect(Math.abs((out.loss.data as Float32Array)[0] - config.loss) / config.loss).toBeLessThan(1e-4);
    expect(grads.trainable.length).toBe([...tensors.keys()].filter((k) => k.startsWith('grad_lora.')).length);
    for (const name of grads.trainable) {
      const peftName = name.replace(/\.lora_([AB])\.weight$/, '.lora_$1.default.weight');
      expect(relativeL2(out[`grad.${name}`].data as Float32Array, toFloat32(tensors.get(`grad_lora.${peftName}`)!)), name).toBeLessThan(1e-4);
    }

    const step = build();
    const { optimizer } = config;
    const compiled = compileTrainStep({
      graph: step.g, loss: step.loss, trainable: step.trainable,
      optimizer: { betas: optimizer.betas, eps: optimizer.eps, weightDecay: optimizer.weight_decay },
    });
    const feeds: Record<string, ort.Tensor> = {
      ...batch, lora_scale: scale,
      step: new ort.Tensor('int64', BigInt64Array.of(1n), []),
      lr: new ort.Tensor('float32', Float32Array.of(optimizer.lr), []),
    };
    const layout = new FlatLayout(compiled.params);
    feeds.params = new ort.Tensor('float32', layout.pack(Object.fromEntries(step.initial)), [layout.size]);
    feeds.m = new ort.Tensor('float32', layout.zeros(), [layout.size]);
    feeds.v = new ort.Tensor('float32', layout.zeros(), [layout.size]);
    const updated = layout.unpack((await runModel(compiled.model, feeds)).new_params.data as Float32Array);
    let worst = 0;
    let moved = 0;
    for (const [module, layer] of after) {
      for (const [slot, expected] of [['lora_A', layer.down], ['lora_B', layer.up]] as const) {
        const actual = updated[`${module}.${slot}.weight`];
        const start = before.get(module)![slot === 'lora_A' ? 'down' : 'up'];
        expected.forEach((value, i) => {
          worst = Math.max(worst, Math.abs(actual[i] - value));
          moved = Math.max(moved, Math.abs(value - start[i]));
        });
      }
    }
    expect(after.size).toBe(before.size);
    expect(worst).toBeLessThan(1e-5);
    // the step moved the parameters by about lr, so the comparison above is not trivially met
    expect(moved).toBeGreaterThan(5e-5);
  });
});
