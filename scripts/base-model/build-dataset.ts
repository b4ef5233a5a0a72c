/** `npm run train:base:data`: writes the emoji dataset (see dataset.ts) to `.base-model/emoji.gz`, what train.ts reads. */
import { mkdir } from 'node:fs/promises';
import { buildEmojiDataset } from './dataset';
import { writeEmojiDataset } from './emoji-records';

await mkdir('.base-model', { recursive: true });
const dataset = await buildEmojiDataset();
await writeEmojiDataset('.base-model/emoji.gz', dataset);
console.log(`${dataset.records.length} images (${dataset.records.filter((r) => r.heldOut).length} held out) in .base-model/emoji.gz`);
