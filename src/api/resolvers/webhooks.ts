import { Arg, Args, Ctx, Field, Float, ID, InputType, Int, Mutation, Query, Resolver } from 'type-graphql';
import { WebhookDelivery, WebhookDeliveryStatus, WebhookEvent, WebhookSettings } from '../../entities';
import { requireUser } from '../../services/viewer';
import { listWebhookDeliveries, redeliverWebhook } from '../../services/webhook-log';
import { getWebhookSettings, rotateWebhookSecret, setWebhookDefault } from '../../services/webhooks';
import { connectionType, PageArgs, toConnection, type Connection } from '../connections';
import type { Context } from '../context';

const WebhookDeliveryConnection = connectionType(WebhookDelivery, 'WebhookDelivery');

@InputType({ description: 'Where to POST a job’s events, signed as Standard Webhooks do.' })
export class WebhookInput {
  @Field(() => String, { description: 'http(s); must not resolve to a loopback, private or reserved address.' })
  url: string;

  @Field(() => [WebhookEvent], { nullable: true, description: 'Default: all.' })
  events?: WebhookEvent[] | null;

  @Field(() => Int, { nullable: true, description: 'PROGRESS once this many steps have passed since the last.' })
  progressEverySteps?: number | null;

  @Field(() => Float, { nullable: true, description: 'PROGRESS once this many seconds have passed since the last; default 5 when neither is given.' })
  progressEverySeconds?: number | null;
}

@Resolver()
export class WebhookResolver {
  @Query(() => WebhookSettings, { description: 'Your signing secret (made on first ask) and default webhook.' })
  webhookSettings(@Ctx() { viewer, services }: Context): Promise<WebhookSettings> {
    return getWebhookSettings(services.db, requireUser(viewer));
  }

  @Mutation(() => WebhookSettings, { description: 'The webhook of your jobs submitted without one; null clears it.' })
  setWebhookDefault(
    @Arg('input', () => WebhookInput, { nullable: true }) input: WebhookInput | null,
    @Ctx() { viewer, services }: Context,
  ): Promise<WebhookSettings> {
    return setWebhookDefault(services.db, requireUser(viewer), input && { ...input }, services.config.webhooks);
  }

  @Mutation(() => WebhookSettings, { description: 'A new signing secret; attempts from now on are signed with it.' })
  rotateWebhookSecret(@Ctx() { viewer, services }: Context): Promise<WebhookSettings> {
    return rotateWebhookSecret(services.db, requireUser(viewer));
  }

  @Query(() => WebhookDeliveryConnection, { description: 'The delivery log: your webhook deliveries (an admin’s: everyone’s), newest first.' })
  async webhookDeliveries(
    @Args(() => PageArgs) page: PageArgs,
    @Arg('jobId', () => ID, { nullable: true }) jobId: string | null,
    @Arg('status', () => WebhookDeliveryStatus, { nullable: true }) status: WebhookDeliveryStatus | null,
    @Ctx() { viewer, services }: Context,
  ): Promise<Connection<WebhookDelivery>> {
    return toConnection(await listWebhookDeliveries(services.db, requireUser(viewer), { jobId, status }, page));
  }

  @Mutation(() => WebhookDelivery, { description: 'Sends a DELIVERED or FAILED delivery again, with the same id and body.' })
  redeliverWebhook(@Arg('id', () => ID) id: string, @Ctx() { viewer, services }: Context): Promise<WebhookDelivery> {
    return redeliverWebhook(services.db, requireUser(viewer), id);
  }
}
