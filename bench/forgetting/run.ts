/**
 * `npm run bench:forgetting [-- options]`: how much each arm forgets while learning K concepts one after another
 * (bench/forgetting/README.md). `--reduced` is the quick CPU run (K = 3, few steps, few images); every option
 * below overrides it. `--method full` fine-tunes the whole UNet in every arm instead of a LoRA (`--rank` is then
 * ignored). A stopped run continues from `--work` when started again with the same options.
 */
import { parseArgs } from 'node:util';
import { runForgetting } from './benchmark';
import type { ForgettingMethod } from './platform';

const { values } = parseArgs({
  options: {
    pack: { type: 'string', default: 'base-models/emoji-sd-64' },
    data: { type: 'string', default: '.base-model/emoji.gz' },
    work: { type: 'string' },
    out: { type: 'string' },
    reduced: { type: 'boolean', default: false },
    method: { type: 'string', default: 'lora' },
    k: { type: 'string' },
    steps: { type: 'string' },
    lr: { type: 'string' },
    rank: { type: 'string' },
    batch: { type: 'string' },
    seed: { type: 'string' },
    images: { type: 'string' },
    'sample-steps': { type: 'string' },
    guidance: { type: 'string' },
    'encoder-steps': { type: 'string' },
  },
});

if (values.method !== 'lora' && values.method !== 'full') throw new Error(`--method must be lora or full, not ${values.method}`);
const method: ForgettingMethod = values.method;
if (method === 'full' && values.rank !== undefined) console.log('[forgetting] --rank is ignored: --method full trains the whole UNet');

/** The full run (60-90 minutes on a 2-core CPU with the 64 px base model, LoRA) and the reduced one (a few minutes). */
const PRESETS = {
  full: { k: 10, steps: 200, images: 8, sampleSteps: 20, encoderSteps: 800 },
  reduced: { k: 3, steps: 30, images: 4, sampleSteps: 10, encoderSteps: 200 },
};
const preset = values.reduced ? PRESETS.reduced : PRESETS.full;
/** Each method's learning rate (README: "Full fine-tuning" says how full's was chosen). */
const LEARNING_RATES: Record<ForgettingMethod, number> = { lora: 3e-4, full: 5e-5 };
/** Where each run keeps its work and results (the LoRA runs' folders are those from before `--method`). */
const FOLDERS: Record<ForgettingMethod, Record<'full' | 'reduced', { work: string; out: string }>> = {
  lora: { full: { work: '.forgetting/full', out: 'bench/results/forgetting' }, reduced: { work: '.forgetting/reduced', out: 'bench/results/forgetting/reduced' } },
  full: {
    full: { work: '.forgetting/full-unet', out: 'bench/results/forgetting/full-unet' },
    reduced: { work: '.forgetting/reduced-full-unet', out: 'bench/results/forgetting/reduced-full-unet' },
  },
};
const folders = FOLDERS[method][values.reduced ? 'reduced' : 'full'];
const number = (value: string | undefined, fallback: number) => (value === undefined ? fallback : Number(value));

await runForgetting({
  pack: values.pack!,
  data: values.data!,
  work: values.work ?? folders.work,
  out: values.out ?? folders.out,
  method,
  k: number(values.k, preset.k),
  steps: number(values.steps, preset.steps),
  learningRate: number(values.lr, LEARNING_RATES[method]),
  rank: number(values.rank, 4),
  batchSize: number(values.batch, 1),
  seed: number(values.seed, 1),
  images: number(values.images, preset.images),
  sampleSteps: number(values['sample-steps'], preset.sampleSteps),
  guidance: number(values.guidance, 5),
  encoderSteps: number(values['encoder-steps'], preset.encoderSteps),
});
