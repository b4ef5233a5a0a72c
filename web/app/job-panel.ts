// Live view of one queued job over the `jobUpdated` subscription: status line, progress bar, cancel.
import { gql, subscribe } from './api';
import { act, byId } from './dom';

export interface JobUpdate {
  jobId: string;
  status: 'QUEUED' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELED';
  progress: number;
  step: number;
  steps: number;
  loss: number | null;
  error: string | null;
  imageIds: string[];
}

const UPDATES = 'subscription($id: ID!) { jobUpdated(jobId: $id) { jobId status progress step steps loss error imageIds } }';

export class JobPanel {
  private readonly root: HTMLElement;
  private readonly status: HTMLElement;
  private readonly bar: HTMLProgressElement;
  private readonly cancel: HTMLButtonElement;
  private jobId: string | null = null;

  constructor(prefix: string, error: HTMLElement) {
    this.root = byId(`${prefix}-job`);
    this.status = byId(`${prefix}-status`);
    this.bar = byId<HTMLProgressElement>(`${prefix}-progress`);
    this.cancel = this.root.querySelector<HTMLButtonElement>('button.cancel')!;
    this.cancel.addEventListener('click', () =>
      act(error, this.cancel, async () => {
        if (this.jobId) await gql('mutation($id: ID!) { cancelJob(id: $id) { id } }', { id: this.jobId });
      }),
    );
  }

  /** Follows the job until it ends and returns its last update; a FAILED job throws its error. */
  async follow(jobId: string, onUpdate: (update: JobUpdate) => void = () => {}): Promise<JobUpdate> {
    this.jobId = jobId;
    this.root.hidden = false;
    this.cancel.hidden = false;
    this.show({ status: 'QUEUED', progress: 0, step: 0, steps: 0, loss: null });
    let last: JobUpdate | undefined;
    try {
      await subscribe<{ jobUpdated: JobUpdate }>(UPDATES, { id: jobId }, ({ jobUpdated }) => {
        last = jobUpdated;
        this.show(jobUpdated);
        onUpdate(jobUpdated);
      });
    } finally {
      this.cancel.hidden = true;
    }
    if (!last) throw new Error('The job ended without any update');
    if (last.status === 'FAILED') throw new Error(`The job failed: ${last.error ?? 'no reason given'}`);
    return last;
  }

  private show(update: Pick<JobUpdate, 'status' | 'progress' | 'step' | 'steps' | 'loss'>): void {
    this.bar.value = update.progress;
    const loss = update.loss === null ? '' : `, loss ${update.loss.toFixed(4)}`;
    const step = update.steps ? `: step ${update.step} of ${update.steps}` : '';
    this.status.textContent = `${update.status}${step}${loss}`;
  }
}
