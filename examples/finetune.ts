// npm run example:finetune: upload photos of a toy, fine-tune a private model on the platform's default
// base model, then draw the toy with the model's new identifier and save the PNGs.
// Env: BIGDIFFUSION_URL, BIGDIFFUSION_API_KEY (else it signs up), FINETUNE_STEPS, STEPS, OUTPUT_DIR.
import { connect, intFromEnv, printProgress, saveImages } from './connect';
import { samplePhotos } from './sample-photos';

const client = await connect();
try {
  const base = await client.defaultBaseModel();
  const instanceImageIds: string[] = [];
  for (const photo of await samplePhotos(base.resolution)) instanceImageIds.push((await client.uploadPhoto(photo, { filename: 'toy.png' })).id);

  const { job, model, concept } = await client.startFineTune({
    target: 'PRIVATE', baseModelId: base.id, name: 'example toy', category: 'toy', kind: 'OBJECT', method: 'LORA',
    instanceImageIds, steps: intFromEnv('FINETUNE_STEPS', 50),
  });
  const prompt = `a ${concept.token} ${concept.category} on the beach`;
  console.log(`fine-tuning "${model.name}" on ${base.name}; prompts say "a ${concept.token} ${concept.category}"`);
  await client.followJob(job.id, { onUpdate: printProgress() });

  const generation = await client.generateImages({ modelId: model.id, prompt, numImages: 2, steps: intFromEnv('STEPS', 30), seed: 42 });
  await client.followJob(generation.id);
  for (const file of await saveImages(client, generation.id)) console.log(`saved ${file}`);
  console.log(`more of it: MODEL_ID=${model.id} PROMPT="${prompt}" npm run example:generate`);
} finally {
  await client.close();
}
