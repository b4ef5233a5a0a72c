import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config';

describe('loadConfig', () => {
  it('defaults to the embedded services on port 4000', () => {
    const config = loadConfig({});
    expect(config.port).toBe(4000);
    expect(config.role).toBe('all');
    expect(config.apiProcesses).toBe(1);
    expect(config.databaseUrl).toBeUndefined();
    expect(config.preparedStatements).toBe(true);
    expect(config.s3).toBeUndefined();
    expect(config.signupEnabled).toBe(true);
    expect(config.jobHeartbeatTimeoutSeconds).toBe(600);
    expect(config.webhooks).toEqual({ allowPrivateNetworks: false, maxAttempts: 8, retryBaseSeconds: 5 });
    expect(config.idempotencyKeyTtlHours).toBe(24);
    expect(config.requestsPerMinutePerKey).toBe(1200);
    expect(config.jobLimits.imagesPerDay).toBe(2000);
    expect(config.jobMaxRetries).toBe(3);
    expect(config.checkpoints).toEqual({ every: 100, kept: 2 });
  });

  it('uses external services when configured', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgres://u:p@db.example:5432/app',
      S3_ENDPOINT: 'https://s3.example',
      S3_BUCKET: 'my-bucket',
      S3_ACCESS_KEY_ID: 'id',
      S3_SECRET_ACCESS_KEY: 'secret',
      SIGNUP_ENABLED: 'false',
      DATABASE_PREPARED_STATEMENTS: 'false',
    });
    expect(config.databaseUrl).toBe('postgres://u:p@db.example:5432/app');
    expect(config.preparedStatements).toBe(false);
    expect(config.s3).toMatchObject({ endpoint: 'https://s3.example', bucket: 'my-bucket', accessKeyId: 'id' });
    expect(config.signupEnabled).toBe(false);
  });

  it.each([
    [{ PORT: 'eighty' }, 'PORT'],
    [{ ROLE: 'both' }, 'ROLE'],
    [{ API_PROCESSES: '0' }, 'API_PROCESSES'],
    [{ DATABASE_URL: 'mysql://x/y' }, 'DATABASE_URL'],
    [{ S3_ENDPOINT: 'http://minio:9000' }, 'S3_ACCESS_KEY_ID'],
    [{ SIGNUP_ENABLED: 'maybe' }, 'SIGNUP_ENABLED'],
    [{ JOB_HEARTBEAT_TIMEOUT_SECONDS: '0' }, 'JOB_HEARTBEAT_TIMEOUT_SECONDS'],
    [{ WEBHOOK_ALLOW_PRIVATE_NETWORKS: 'maybe' }, 'WEBHOOK_ALLOW_PRIVATE_NETWORKS'],
    [{ WEBHOOK_MAX_ATTEMPTS: '0' }, 'WEBHOOK_MAX_ATTEMPTS'],
    [{ JOB_MAX_RETRIES: '-1' }, 'JOB_MAX_RETRIES'],
    [{ FINETUNE_CHECKPOINT_STEPS: 'often' }, 'FINETUNE_CHECKPOINT_STEPS'],
    [{ FINETUNE_CHECKPOINTS_KEPT: '0' }, 'FINETUNE_CHECKPOINTS_KEPT'],
  ])('rejects %o naming %s', (env, variable) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(variable);
  });

  it('stops `npm start` with a message naming the variable', async () => {
    const run = promisify(execFile)('npx', ['tsx', 'src/main.ts'], { env: { ...process.env, PORT: 'eighty' } });
    const failure = await run.then(
      () => undefined,
      (error: { code: number; stderr: string }) => error,
    );
    expect(failure?.code).toBe(1);
    expect(failure?.stderr).toContain('PORT');
  });
});
