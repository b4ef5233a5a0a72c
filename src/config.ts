import path from 'node:path';
import { z } from 'zod';
import { ENGINE_DEVICES, type EngineDevice } from './engine';

/** Environment variables understood by the platform; README "Configuration" documents each one. */
const boolean = z
  .enum(['true', 'false', '1', '0'])
  .transform((value) => value === 'true' || value === '1');

const EnvSchema = z
  .object({
    PORT: z.coerce.number().int().min(0).max(65535).default(4000),
    HOST: z.string().min(1).default('0.0.0.0'),
    ROLE: z.enum(['all', 'api', 'worker']).default('all'),
    API_PROCESSES: z.coerce.number().int().min(1).max(64).default(1),
    DATA_DIR: z.string().min(1).default('./data'),
    DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/ }).optional(),
    DATABASE_PREPARED_STATEMENTS: boolean.default(true),
    S3_ENDPOINT: z.url({ protocol: /^https?$/ }).optional(),
    S3_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be a valid S3 bucket name').default('bigdiffusion'),
    S3_REGION: z.string().min(1).default('us-east-1'),
    S3_ACCESS_KEY_ID: z.string().min(1).optional(),
    S3_SECRET_ACCESS_KEY: z.string().min(1).optional(),
    SIGNUP_ENABLED: boolean.default(true),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    MAX_BODY_BYTES: z.coerce.number().int().positive().default(1_000_000),
    QUERY_MAX_DEPTH: z.coerce.number().int().positive().default(10),
    QUERY_MAX_COST: z.coerce.number().int().positive().default(5000),
    BUNDLED_BASE_MODEL: z.enum(['emoji-sd-64', 'tiny-random']).default('emoji-sd-64'),
    ENGINE_DEVICE: z.enum(ENGINE_DEVICES as [EngineDevice, ...EngineDevice[]]).default('cpu'),
    JOB_HEARTBEAT_TIMEOUT_SECONDS: z.coerce.number().int().positive().default(600),
    JOB_MAX_RETRIES: z.coerce.number().int().min(0).default(3),
    FINETUNE_CHECKPOINT_STEPS: z.coerce.number().int().min(0).default(100),
    FINETUNE_CHECKPOINTS_KEPT: z.coerce.number().int().positive().default(2),
    MAX_ACTIVE_JOBS_PER_USER: z.coerce.number().int().positive().default(100),
    MAX_JOBS_PER_MINUTE_PER_USER: z.coerce.number().int().positive().default(600),
    MAX_IMAGES_PER_DAY_PER_USER: z.coerce.number().int().positive().default(2000),
    MAX_STORAGE_BYTES_PER_USER: z.coerce.number().int().positive().default(10 * 1024 ** 3),
    MAX_REQUESTS_PER_MINUTE_PER_KEY: z.coerce.number().int().positive().default(1200),
    WEBHOOK_ALLOW_PRIVATE_NETWORKS: boolean.default(false),
    WEBHOOK_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(50).default(8),
    WEBHOOK_RETRY_BASE_SECONDS: z.coerce.number().positive().default(5),
    IDEMPOTENCY_KEY_TTL_HOURS: z.coerce.number().positive().default(24),
  })
  .superRefine((env, ctx) => {
    // A real S3 needs credentials; the embedded store makes its own.
    if (env.S3_ENDPOINT) {
      for (const name of ['S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY'] as const) {
        if (!env[name]) ctx.addIssue({ code: 'custom', path: [name], message: 'is required when S3_ENDPOINT is set' });
      }
    }
  });

export interface S3Config {
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}

export interface Config {
  port: number;
  host: string;
  role: 'all' | 'api' | 'worker';
  /** Processes serving the API on the one port (api/processes.ts); 1: this process serves it. */
  apiProcesses: number;
  /** Where embedded PostgreSQL (`postgres/`) and S3 (`s3/`) keep their data. */
  dataDir: string;
  /** External PostgreSQL; when absent an embedded one starts under `dataDir`. */
  databaseUrl?: string;
  /** Statements with parameters prepared once per connection (storage/database.ts); off behind a pooler that cannot keep them. */
  preparedStatements: boolean;
  /** External S3; when absent an embedded s3rver starts under `dataDir`. */
  s3?: S3Config;
  s3Bucket: string;
  signupEnabled: boolean;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  maxBodyBytes: number;
  queryMaxDepth: number;
  queryMaxCost: number;
  /** The base model a fresh installation registers as its default (services/base-models.ts). */
  bundledBaseModel: 'emoji-sd-64' | 'tiny-random';
  /** Where workers run the engine's sessions. */
  engineDevice: EngineDevice;
  /** A RUNNING job whose worker showed no life for this long is requeued (or failed, past `jobMaxRetries`): its worker died. */
  jobHeartbeatTimeoutSeconds: number;
  /** How many times a job whose worker died is requeued before it fails. */
  jobMaxRetries: number;
  checkpoints: CheckpointConfig;
  jobLimits: JobLimits;
  /** HTTP requests one API key may make in a minute, per API process. */
  requestsPerMinutePerKey: number;
  webhooks: WebhookConfig;
  /** How long a retry with an idempotency key still returns the first request's object. */
  idempotencyKeyTtlHours: number;
}

/** How a fine-tune saves its state so another worker can continue it. */
export interface CheckpointConfig {
  /** Steps between checkpoints (0: none, but a stopping worker still saves one). */
  every: number;
  /** The newest checkpoints kept per job; older ones are deleted. */
  kept: number;
}

/** How webhooks are delivered (services/webhook-delivery.ts). */
export interface WebhookConfig {
  /** Allows URLs on loopback and private networks: for tests and closed deployments, never on a shared server (SSRF). */
  allowPrivateNetworks: boolean;
  /** Attempts before a delivery is FAILED. */
  maxAttempts: number;
  /** The wait after the first failed attempt; each later one waits 4 times longer (at most 6 hours). */
  retryBaseSeconds: number;
}

/** How much work one user may ask for: jobs queued or running at once, jobs submitted per minute, images a day; and bytes kept in storage. */
export interface JobLimits {
  active: number;
  perMinute: number;
  imagesPerDay: number;
  storageBytes: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Reads and validates the environment; throws a ConfigError naming every invalid variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // An empty variable means "not set", as in most shells' `VAR= cmd`.
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== ''));
  const parsed = EnvSchema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `  ${issue.path.join('.')}: ${issue.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  return {
    port: e.PORT,
    host: e.HOST,
    role: e.ROLE,
    apiProcesses: e.API_PROCESSES,
    dataDir: path.resolve(e.DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    preparedStatements: e.DATABASE_PREPARED_STATEMENTS,
    s3: e.S3_ENDPOINT
      ? {
          endpoint: e.S3_ENDPOINT,
          bucket: e.S3_BUCKET,
          region: e.S3_REGION,
          accessKeyId: e.S3_ACCESS_KEY_ID!,
          secretAccessKey: e.S3_SECRET_ACCESS_KEY!,
        }
      : undefined,
    s3Bucket: e.S3_BUCKET,
    signupEnabled: e.SIGNUP_ENABLED,
    logLevel: e.LOG_LEVEL,
    maxBodyBytes: e.MAX_BODY_BYTES,
    queryMaxDepth: e.QUERY_MAX_DEPTH,
    queryMaxCost: e.QUERY_MAX_COST,
    bundledBaseModel: e.BUNDLED_BASE_MODEL,
    engineDevice: e.ENGINE_DEVICE,
    jobHeartbeatTimeoutSeconds: e.JOB_HEARTBEAT_TIMEOUT_SECONDS,
    jobMaxRetries: e.JOB_MAX_RETRIES,
    checkpoints: { every: e.FINETUNE_CHECKPOINT_STEPS, kept: e.FINETUNE_CHECKPOINTS_KEPT },
    jobLimits: { active: e.MAX_ACTIVE_JOBS_PER_USER, perMinute: e.MAX_JOBS_PER_MINUTE_PER_USER, imagesPerDay: e.MAX_IMAGES_PER_DAY_PER_USER,
      storageBytes: e.MAX_STORAGE_BYTES_PER_USER },
    requestsPerMinutePerKey: e.MAX_REQUESTS_PER_MINUTE_PER_KEY,
    webhooks: {
      allowPrivateNetworks: e.WEBHOOK_ALLOW_PRIVATE_NETWORKS,
      maxAttempts: e.WEBHOOK_MAX_ATTEMPTS,
      retryBaseSeconds: e.WEBHOOK_RETRY_BASE_SECONDS,
    },
    idempotencyKeyTtlHours: e.IDEMPOTENCY_KEY_TTL_HOURS,
  };
}
