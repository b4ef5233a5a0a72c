/**
 * `npm run train:base:demo [-- --subject S --steps N]`: what a newcomer sees, end to end through the API. Starts the
 * platform as `npm start` does (embedded PostgreSQL and S3, the bundled emoji base model as default) on a temporary
 * data folder, signs up, uploads the noto and twemoji drawings of a subject held out of pretraining (README
 * "Base model"), each as is, rotated and shrunk (the forgetting benchmark's augmentations), fine-tunes a LoRA on them, and generates `a <token> <category>` in each style. Writes
 * `finetune.png` (prompt rows x seeds, the base model's own `a <category>` first) and `finetune.json` (timings)
 * into `--out`.
 */
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { loadConfig } from '../../src/config';
import { startPlatform } from '../../src/main';
import { pngOf, subjectImages } from '../../bench/forgetting/concepts';
import { HELD_OUT_SUBJECTS } from './dataset';
import { readEmojiDataset } from './emoji-records';
import { labeledGrid } from './figures';

const { values: OPTIONS } = parseArgs({
  options: {
    data: { type: 'string', default: '.base-model/emoji.gz' },
    subject: { type: 'string', default: 'tropical fish' },
    steps: { type: 'string', default: '200' },
    lr: { type: 'string', default: '3e-4' },
    out: { type: 'string', default: 'bench/results/base-model' },
  },
});
const SEEDS = 4;

async function main() {
  const subject = OPTIONS.subject!;
  const category = HELD_OUT_SUBJECTS[subject];
  if (!category) throw new Error(`--subject: one of the held-out subjects: ${Object.keys(HELD_OUT_SUBJECTS).join(', ')}`);
  const data = await readEmojiDataset(OPTIONS.data!);
  const photos = await Promise.all((await subjectImages(data, subject)).map(pngOf));

  const dataDir = await mkdtemp(join(tmpdir(), 'bd-demo-'));
  const platform = await startPlatform(loadConfig({ DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent' }), pino({ level: 'silent' }));
  try {
    let key = '';
    const gql = async (query: string, variables: Record<string, unknown> = {}, body?: FormData) => {
      const headers: Record<string, string> = body ? { 'apollo-require-preflight': 'true' } : { 'content-type': 'application/json' };
      if (key) headers.authorization = `Bearer ${key}`;
      const response = await fetch(platform.url!, { method: 'POST', headers, body: body ?? JSON.stringify({ query, variables }) });
      const result = (await response.json()) as { data?: Record<string, any>; errors?: unknown[] };
      if (result.errors) throw new Error(JSON.stringify(result.errors));
      return result.data!;
    };
    key = (await gql('mutation { signUp(email: "newcomer@example.org") { secret } }')).signUp.secret;
    const { defaultBaseModel } = await gql('{ defaultBaseModel { id name } }');

    const instanceImageIds: string[] = [];
    for (const photo of photos) {
      const form = new FormData();
      form.set('operations', JSON.stringify({ query: 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', variables: { file: null } }));
      form.set('map', JSON.stringify({ 0: ['variables.file'] }));
      form.set('0', new Blob([new Uint8Array(photo)], { type: 'image/png' }), 'photo.png');
      instanceImageIds.push((await gql('', {}, form)).uploadInstanceImage.id);
    }
    const started = (await gql('mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } model { id } concept { token } } }', {
      input: {
        target: 'PRIVATE', baseModelId: defaultBaseModel.id, category, kind: 'OBJECT', instanceImageIds, method: 'LORA',
        steps: Number(OPTIONS.steps), learningRate: Number(OPTIONS.lr), seed: 1,
      },
    })).startFineTune;
    const fineTune = await finished(gql, started.job.id);

    const { token } = started.concept;
    const prompts = [`a ${category}`, `a ${token} ${category}`, `a ${token} ${category}, noto style`, `a ${token} ${category}, twemoji style`];
    const rows = [{ label: `training images (${subject})`, images: photos }];
    const generations: number[] = [];
    for (const prompt of prompts) {
      const job = (await gql('mutation($input: GenerateImagesInput!) { generateImages(input: $input) { id } }', {
        input: { modelId: started.model.id, prompt, steps: 20, numImages: SEEDS, seed: 1 },
      })).generateImages;
      const done = await finished(gql, job.id);
      generations.push(done.seconds);
      const images = await Promise.all(done.images.map(async ({ url }: { url: string }) =>
        Buffer.from(await (await fetch(new URL(url, platform.url!), { headers: { authorization: `Bearer ${key}` } })).arrayBuffer())));
      rows.push({ label: prompt, images });
    }
    await mkdir(OPTIONS.out!, { recursive: true });
    await writeFile(join(OPTIONS.out!, 'finetune.png'), await labeledGrid(rows, { title: `LoRA fine-tune through the API on ${photos.length} images of a held-out emoji (${OPTIONS.steps} steps)` }));
    const report = { baseModel: defaultBaseModel.name, subject, category, token, images: photos.length, steps: Number(OPTIONS.steps), learningRate: Number(OPTIONS.lr), fineTuneSeconds: fineTune.seconds, generateSeconds: generations, note: `${SEEDS} images x 20 steps a generation; job run times (queue wait excluded)` };
    await writeFile(join(OPTIONS.out!, 'finetune.json'), `${JSON.stringify(report, null, 2)}\n`);
    console.log(JSON.stringify(report, null, 2));
  } finally {
    await platform.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** Polls a job until it ends; its run time and images. */
async function finished(gql: (query: string, variables?: Record<string, unknown>) => Promise<Record<string, any>>, id: string) {
  for (;;) {
    const { job } = await gql('query($id: ID!) { job(id: $id) { status error startedAt finishedAt images { url } } }', { id });
    if (job.status === 'SUCCEEDED') return { seconds: (Date.parse(job.finishedAt) - Date.parse(job.startedAt)) / 1000, images: job.images };
    if (job.status === 'FAILED' || job.status === 'CANCELED') throw new Error(`job ${id} ${job.status}: ${job.error}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

await main();
