// Upload 3-8 photos and start a DreamBooth fine-tune; its loss is drawn live.
import { gql, gqlUpload } from './api';
import { byId, fillSelect, onSubmit, optionalNumber, optionalString } from './dom';
import { JobPanel } from './job-panel';
import type { Model } from './models';

const MIN_PHOTOS = 3;
const MAX_PHOTOS = 8;

/** Wires the fine-tune section; `onDone` runs after each job ends (the models and jobs changed). */
export function setUpFineTune(onDone: () => Promise<void>): { setModels: (models: Model[]) => void } {
  const error = byId('finetune-error');
  const target = byId<HTMLSelectElement>('ft-target');
  const metamodel = byId<HTMLSelectElement>('ft-model');
  const panel = new JobPanel('finetune', error);
  let models: Model[] = [];

  // Only PRIVATE_META and META targets teach an existing metamodel, of their own kind.
  const showMetamodels = () => {
    const kind = target.value;
    fillSelect(
      metamodel,
      models.filter((m) => m.kind === kind).map((m) => ({ value: m.id, label: m.name })),
      kind === 'PRIVATE' ? 'a new model' : 'a new metamodel',
    );
    metamodel.disabled = kind === 'PRIVATE';
  };
  target.addEventListener('change', showMetamodels);

  onSubmit(byId<HTMLFormElement>('finetune-form'), error, async (data) => {
    const photos = data.getAll('photos').filter((p): p is File => p instanceof File && p.size > 0);
    if (photos.length < MIN_PHOTOS || photos.length > MAX_PHOTOS) {
      throw new Error(`Choose ${MIN_PHOTOS} to ${MAX_PHOTOS} photos (${photos.length} chosen)`);
    }
    const job = byId('finetune-job');
    const status = byId('finetune-status');
    job.hidden = false;
    let jobId: string;
    try {
      const instanceImageIds: string[] = [];
      for (const [i, photo] of photos.entries()) {
        status.textContent = `Uploading photo ${i + 1} of ${photos.length}…`;
        const { uploadInstanceImage } = await gqlUpload<{ uploadInstanceImage: { id: string } }>(
          'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }',
          photo,
        );
        instanceImageIds.push(uploadInstanceImage.id);
      }
      jobId = (await gql<{ startFineTune: { job: { id: string } } }>(
        'mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } } }',
        { input: fineTuneInput(data, instanceImageIds) },
      )).startFineTune.job.id;
    } catch (error) {
      job.hidden = true; // no job to show: the error says why
      throw error;
    }
    const losses: [number, number][] = [];
    drawLoss(losses, 1);
    try {
      await panel.follow(jobId, (update) => {
        if (update.loss === null || losses.at(-1)?.[0] === update.step) return;
        losses.push([update.step, update.loss]);
        drawLoss(losses, update.steps);
      });
    } finally {
      await onDone();
    }
  });

  return {
    setModels: (next) => {
      models = next;
      showMetamodels();
    },
  };
}

function fineTuneInput(data: FormData, instanceImageIds: string[]) {
  const modelId = optionalString(data, 'modelId');
  return {
    target: data.get('target'),
    ...(modelId ? { modelId } : { baseModelId: data.get('baseModelId'), name: optionalString(data, 'name') }),
    category: String(data.get('category')).trim(),
    kind: data.get('kind'),
    instanceImageIds,
    steps: optionalNumber(data, 'steps'),
    learningRate: optionalNumber(data, 'learningRate'),
    method: data.get('method'),
    token: optionalString(data, 'token'),
  };
}

/** The loss by step (1..steps) as a polyline across the chart's 300x100 box, scaled to the losses seen so far. */
function drawLoss(points: [number, number][], steps: number): void {
  const line = byId('loss-chart').querySelector('polyline')!;
  if (!points.length) return line.setAttribute('points', '');
  const losses = points.map(([, loss]) => loss);
  const low = Math.min(...losses);
  const span = Math.max(...losses) - low || 1;
  line.setAttribute(
    'points',
    points.map(([step, loss]) => `${(((step - 1) / Math.max(steps - 1, 1)) * 300).toFixed(1)},${(95 - ((loss - low) / span) * 90).toFixed(1)}`).join(' '),
  );
}
