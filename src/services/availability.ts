import { setTimeout as sleep } from 'node:timers/promises';
import type { Services } from './container';

export { isServiceOutage } from '../storage/outage';

export interface ServiceHealth {
  database: boolean;
  objectStore: boolean;
}

/** Whether PostgreSQL and the object store answer now. */
export async function checkServices({ db, store }: Pick<Services, 'db' | 'store'>): Promise<ServiceHealth> {
  const answers = (check: Promise<unknown>) => check.then(() => true, () => false);
  const [database, objectStore] = await Promise.all([answers(db.query('SELECT 1')), answers(store.ping())]);
  return { database, objectStore };
}

/** Resolves once both answer, asking every `intervalMs`; rejects with the signal's reason if it aborts first. */
export async function untilServicesAnswer(services: Pick<Services, 'db' | 'store'>, signal: AbortSignal, intervalMs = 1000): Promise<void> {
  for (;;) {
    signal.throwIfAborted();
    const { database, objectStore } = await checkServices(services);
    if (database && objectStore) return;
    await sleep(intervalMs, undefined, { signal });
  }
}
