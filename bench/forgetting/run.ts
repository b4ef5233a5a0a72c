/**
 * `npm run bench:forgetting [-- options]`: how much each arm forgets while learning K concepts one after another
 * (bench/forgetting/README.md). `--reduced` is the quick CPU run (K = 3, few steps, few images); every option
 * below overrides it. A stopped run continues from `--work` when started again with the same options.
 */
import { parseArgs } from 'node:util';
import { runForgetting } from './benchmark';

const { values } = parseArgs({
  options: {
    pack: { type: 'string', default: 'base-models/emoji-sd-64' },
    data: { type: 'string', default: '.base-model/emoji.gz' },
    work: { type: 'string' },
    out: { type: 'string' },
    reduced: { type: 'boolean', default: false },
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

/** The full run (60-90 minutes on a 2-core CPU with the 64 px base model) and the reduced one (a few minutes). */
const PRESETS = {
  full: { k: 10, steps: 200, learningRate: 3e-4, images: 8, sampleSteps: 20, encoderSteps: 800 },
  reduced: { k: 3, steps: 30, learningRate: 3e-4, images: 4, sampleSteps: 10, encoderSteps: 200 },
};
const preset = values.reduced ? PRESETS.reduced : PRESETS.full;
const number = (value: string | undefined, fallback: number) => (value === undefined ? fallback : Number(value));

await runForgetting({
  pack: values.pack!,
  data: values.data!,
  work: values.work ?? `.forgetting/${values.reduced ? 'reduced' : 'full'}`,
  out: values.out ?? `bench/results/forgetting${values.reduced ? '/reduced' : ''}`,
  k: number(values.k, preset.k),
  steps: number(values.steps, preset.steps),
  learningRate: number(values.lr, preset.learningRate),
  rank: number(values.rank, 4),
  batchSize: number(values.batch, 1),
  seed: number(values.seed, 1),
  images: number(values.images, preset.images),
  sampleSteps: number(values['sample-steps'], preset.sampleSteps),
  guidance: number(values.guidance, 5),
  encoderSteps: number(values['encoder-steps'], preset.encoderSteps),
});
