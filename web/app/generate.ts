// Text-to-image: queue a job, follow its progress, show the PNGs.
import { gql, imageObjectUrl } from './api';
import { byId, fillSelect, onSubmit, optionalNumber, optionalString } from './dom';
import { JobPanel } from './job-panel';
import type { Model } from './models';

interface Image {
  url: string;
  width: number;
  height: number;
  seed: number;
  prompt: string;
}

/** Wires the generate section; `onDone` runs after each job ends. */
export function setUpGenerate(onDone: () => Promise<void>): { setModels: (models: Model[]) => void } {
  const error = byId('generate-error');
  const gallery = byId('gallery');
  const panel = new JobPanel('generate', error);

  onSubmit(byId<HTMLFormElement>('generate-form'), error, async (data) => {
    const input = {
      modelId: optionalString(data, 'modelId'),
      prompt: String(data.get('prompt')).trim(),
      steps: optionalNumber(data, 'steps'),
      guidanceScale: optionalNumber(data, 'guidanceScale'),
      seed: optionalNumber(data, 'seed'),
      width: optionalNumber(data, 'width'),
      height: optionalNumber(data, 'height'),
      numImages: optionalNumber(data, 'numImages'),
    };
    if (!input.modelId) throw new Error('Create a model first (in Models above): generation runs on a model');
    const { generateImages } = await gql<{ generateImages: { id: string } }>(
      'mutation($input: GenerateImagesInput!) { generateImages(input: $input) { id } }',
      { input },
    );
    try {
      const last = await panel.follow(generateImages.id);
      if (last.status !== 'SUCCEEDED') return;
      const { job } = await gql<{ job: { images: Image[] } }>(
        'query($id: ID!) { job(id: $id) { images { url width height seed prompt } } }',
        { id: generateImages.id },
      );
      const figures = await Promise.all(job.images.map(figure));
      gallery.prepend(...figures);
    } finally {
      await onDone();
    }
  });

  return {
    setModels: (models) =>
      fillSelect(
        byId<HTMLSelectElement>('gen-model'),
        models.map((m) => ({ value: m.id, label: `${m.name} (${m.kind})` })),
      ),
  };
}

async function figure(image: Image): Promise<HTMLElement> {
  const img = document.createElement('img');
  img.src = await imageObjectUrl(image.url);
  img.alt = image.prompt;
  const caption = document.createElement('figcaption');
  caption.textContent = `${image.width}×${image.height}, seed ${image.seed}`;
  const element = document.createElement('figure');
  element.append(img, caption);
  return element;
}
