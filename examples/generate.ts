// npm run example:generate: draw with MODEL_ID (e.g. the one example:finetune made) or a new private
// model on the platform's default base model, following the job live, and save the PNGs.
// Env: BIGDIFFUSION_URL, BIGDIFFUSION_API_KEY (else it signs up), MODEL_ID, PROMPT, STEPS, OUTPUT_DIR.
import { CreateModelDocument } from '@bigdiffusion/client';
import { connect, intFromEnv, printProgress, saveImages } from './connect';

const client = await connect();
try {
  // Any typed document goes through request(); the helpers cover the common calls.
  const modelId = process.env.MODEL_ID ?? (await client.request(CreateModelDocument, {
    input: { name: 'example', kind: 'PRIVATE', baseModelId: (await client.defaultBaseModel()).id },
  })).createModel.id;

  const job = await client.generateImages({ modelId, prompt: process.env.PROMPT ?? 'a photo of a dog', numImages: 2, steps: intFromEnv('STEPS', 30) });
  await client.followJob(job.id, { onUpdate: printProgress() });
  for (const file of await saveImages(client, job.id)) console.log(`saved ${file}`);
} finally {
  await client.close();
}
