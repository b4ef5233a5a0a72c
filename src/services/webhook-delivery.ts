import { createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import pg from 'pg';
import type { Logger } from 'pino';
import type { WebhookConfig } from '../config';
import { WebhookDeliveryStatus } from '../entities';
import { isPublicAddress, publicOnlyLookup } from './webhook-urls';

/** The dispatcher's connection's name in pg_stat_activity. */
const WEBHOOK_DISPATCHER = 'bigdiffusion webhooks';

/** How often an idle dispatcher looks for due deliveries. */
const POLL_MS = 500;
/** Attempts one dispatcher has on their way at once: a slow receiver holds up one of them, not the others. */
const MAX_IN_FLIGHT = 50;
/** A receiver that has not answered by then has failed this attempt. */
const TIMEOUT_MS = 10_000;
/** An attempt still unanswered this long after it was claimed is taken as lost (its process died) and made again. */
const LEASE_SECONDS = 60;
/** The longest wait between two attempts. */
const MAX_RETRY_SECONDS = 6 * 3600;
const MAX_ERROR_LENGTH = 500;

/**
 * Standard Webhooks' `webhook-signature`: `v1,` and the base64 HMAC-SHA256, keyed by the secret's
 * base64 part, of `id.timestamp.body`.
 */
export function signWebhook(secret: string, id: string, timestamp: number, body: string): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
}

/** How long after failed attempt `attempt` (1, 2, ...) the next one waits: the base, times 4 each time. */
export function retryDelaySeconds(config: WebhookConfig, attempt: number): number {
  return Math.min(config.retryBaseSeconds * 4 ** (attempt - 1), MAX_RETRY_SECONDS);
}

interface Claimed {
  id: string;
  url: string;
  body: string;
  attempts: number;
  secret: string;
}

/**
 * Sends the outbox's due deliveries (services/webhooks.ts writes them). Every process runs one; they
 * share the table, each claiming rows with SKIP LOCKED and a lease: a claimed row is due again
 * LEASE_SECONDS later, so an attempt lost with its process is made again, and the outcome of an
 * attempt is written only if no later claim took the row meanwhile. Delivery is at least once: the
 * `webhook-id` (the delivery's id, the same on every attempt) lets receivers drop repeats. Its polls
 * and writes go through a connection of its own, never taking one from the pool the API and workers
 * share.
 */
export class WebhookDispatcher {
  readonly #pool: pg.Pool;
  readonly #inFlight = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | null = null;
  #claiming: Promise<void> | null = null;
  #stopped = false;

  constructor(
    databaseUrl: string,
    private readonly log: Logger,
    private readonly config: WebhookConfig,
  ) {
    this.#pool = new pg.Pool({ connectionString: databaseUrl, max: 1, application_name: WEBHOOK_DISPATCHER });
    this.#pool.on('error', (error) => log.warn({ err: error }, 'webhook dispatcher connection lost'));
  }

  start(): void {
    this.#schedule(0);
  }

  /** Stops claiming and waits for the attempts on their way (each ends within TIMEOUT_MS). */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#claiming;
    await Promise.all(this.#inFlight);
    await this.#pool.end();
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#claiming = this.#sendDue().then(
        () => this.#schedule(POLL_MS),
        (error: unknown) => {
          this.log.error({ err: error }, 'webhook dispatch failed');
          this.#schedule(POLL_MS);
        },
      );
    }, ms);
  }

  /** Claims as many due deliveries as there are free places and sets their attempts off, without waiting for them. */
  async #sendDue(): Promise<void> {
    const free = MAX_IN_FLIGHT - this.#inFlight.size;
    if (free <= 0) return;
    const { rows: claimed } = await this.#pool.query<Claimed>(
      `UPDATE webhook_delivery d
          SET attempts = d.attempts + 1, "lastAttemptAt" = now(), "nextAttemptAt" = now() + make_interval(secs => $3)
         FROM webhook_settings s
        WHERE d.id IN (SELECT id FROM webhook_delivery WHERE status = $1 AND "nextAttemptAt" <= now()
                        ORDER BY "nextAttemptAt" LIMIT $2 FOR UPDATE SKIP LOCKED)
          AND s."userId" = d."ownerId"
        RETURNING d.id, d.url, d.body, d.attempts, s.secret`,
      [WebhookDeliveryStatus.PENDING, free, LEASE_SECONDS],
    );
    for (const delivery of claimed) {
      const attempt: Promise<void> = this.#attempt(delivery)
        .catch((error: unknown) => this.log.error({ err: error, deliveryId: delivery.id }, 'webhook attempt not recorded; it is retried after its lease'))
        .finally(() => this.#inFlight.delete(attempt));
      this.#inFlight.add(attempt);
    }
  }

  async #attempt(delivery: Claimed): Promise<void> {
    let responseStatus: number | null = null;
    let error: string | null = null;
    try {
      responseStatus = await this.#post(delivery);
      if (responseStatus < 200 || responseStatus >= 300) error = `HTTP ${responseStatus}`;
    } catch (cause) {
      error = (cause as Error).message.slice(0, MAX_ERROR_LENGTH) || 'request failed';
    }
    const delivered = error === null;
    const exhausted = !delivered && delivery.attempts >= this.config.maxAttempts;
    const wait = delivered || exhausted ? 0 : retryDelaySeconds(this.config, delivery.attempts);
    const status = delivered ? WebhookDeliveryStatus.DELIVERED : exhausted ? WebhookDeliveryStatus.FAILED : WebhookDeliveryStatus.PENDING;
    // Only if no later claim took the row meanwhile (this attempt outlived its lease).
    await this.#pool.query(
      `UPDATE webhook_delivery
          SET status = $3, "responseStatus" = $4, "lastError" = $5, "nextAttemptAt" = now() + make_interval(secs => $6),
              "deliveredAt" = CASE WHEN $8::boolean THEN now() END
        WHERE id = $1 AND attempts = $2 AND status = $7`,
      [delivery.id, delivery.attempts, status, responseStatus, error, wait, WebhookDeliveryStatus.PENDING, delivered],
    );
    if (!delivered) this.log.info({ deliveryId: delivery.id, attempt: delivery.attempts, error, exhausted }, 'webhook attempt failed');
  }

  /** POSTs the body, signed now; resolves with the receiver's status (its body is not read). */
  #post({ id, url, body, secret }: Claimed): Promise<number> {
    const target = new URL(url);
    const host = target.hostname.replace(/^\[(.*)\]$/, '$1');
    const guard = !this.config.allowPrivateNetworks;
    // Names are checked as they resolve (publicOnlyLookup); an address literal is not looked up.
    if (guard && net.isIP(host) && !isPublicAddress(host)) return Promise.reject(new Error('the URL points at a non-public address'));
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = {
      'content-type': 'application/json',
      'user-agent': 'bigdiffusion-webhooks',
      'webhook-id': id,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signWebhook(secret, id, timestamp, body),
    };
    return new Promise((resolve, reject) => {
      const request = (target.protocol === 'https:' ? https : http).request(
        target,
        { method: 'POST', headers, timeout: TIMEOUT_MS, lookup: guard ? publicOnlyLookup : undefined },
        (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        },
      );
      request.on('timeout', () => request.destroy(new Error(`no response within ${TIMEOUT_MS / 1000} s`)));
      request.on('error', reject);
      request.end(body);
    });
  }
}
