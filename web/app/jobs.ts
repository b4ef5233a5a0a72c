// The viewer's latest jobs, newest first.
import { gql } from './api';
import { act, byId, textRow } from './dom';

interface JobRow {
  createdAt: string;
  type: string;
  status: string;
  step: number;
  steps: number;
  loss: number | null;
  error: string | null;
}

export function setUpJobs(): { reload: () => Promise<void> } {
  const error = byId('jobs-error');
  const reload = async () => {
    const { jobs } = await gql<{ jobs: { nodes: JobRow[] } }>('{ jobs(first: 50) { nodes { createdAt type status step steps loss error } } }');
    byId('job-rows').replaceChildren(
      ...jobs.nodes.map((j) =>
        textRow([new Date(j.createdAt).toLocaleString(), j.type, j.status, `${j.step} / ${j.steps}`, j.loss?.toFixed(4), j.error]),
      ),
    );
  };
  const refresh = byId<HTMLButtonElement>('jobs-refresh');
  refresh.addEventListener('click', () => act(error, refresh, reload));
  return { reload };
}
