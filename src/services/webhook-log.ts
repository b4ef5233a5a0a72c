import type { DataSource } from 'typeorm';
import { WebhookDelivery, WebhookDeliveryStatus, type User } from '../entities';
import { conflict, notFound } from './errors';
import { getJob } from './jobs';
import { pageOf, type Page, type PageRequest } from './pagination';
import { parseId } from './validate';
import { isAdmin } from './viewer';

/** The webhook delivery log (the outbox services/webhooks.ts writes), as users read it and ask for resends. */

export interface DeliveryFilter {
  jobId?: string | null;
  status?: WebhookDeliveryStatus | null;
}

/** A page of the user's deliveries (an admin's: everyone's), newest first; a job filter names a job the user sees. */
export async function listWebhookDeliveries(db: DataSource, user: User, filter: DeliveryFilter, page: PageRequest): Promise<Page<WebhookDelivery>> {
  const query = db.getRepository(WebhookDelivery).createQueryBuilder('delivery');
  if (!isAdmin(user)) query.andWhere('delivery.ownerId = :owner', { owner: user.id });
  if (filter.jobId != null) query.andWhere('delivery.jobId = :jobId', { jobId: (await getJob(db, user, filter.jobId)).id });
  if (filter.status) query.andWhere('delivery.status = :status', { status: filter.status });
  return pageOf(query, page);
}

/** Sends a finished delivery again (same id and body), with a fresh round of attempts. */
export async function redeliverWebhook(db: DataSource, user: User, id: string): Promise<WebhookDelivery> {
  const deliveries = db.getRepository(WebhookDelivery);
  const delivery = await deliveries.findOneBy({ id: parseId(id) });
  if (!delivery || (delivery.ownerId !== user.id && !isAdmin(user))) throw notFound('Webhook delivery');
  const { affected } = await deliveries
    .createQueryBuilder()
    .update()
    .set({ status: WebhookDeliveryStatus.PENDING, attempts: 0, nextAttemptAt: () => 'now()' })
    .where('id = :id AND status <> :pending', { id: delivery.id, pending: WebhookDeliveryStatus.PENDING })
    .execute();
  if (!affected) throw conflict('This delivery is still being attempted');
  return deliveries.findOneByOrFail({ id: delivery.id });
}
