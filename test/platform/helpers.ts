import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createClient } from 'graphql-ws';
import { pino } from 'pino';
import type { DataSource, Logger } from 'typeorm';
import WebSocket from 'ws';
import { loadConfig } from '../../src/config';
import { startPlatform, type RunningPlatform } from '../../src/main';
import { removeEmbeddedPostgres } from '../../src/storage/embedded-postgres';

/** A temp data directory removed by the returned function, with its embedded cluster wherever that lives. */
export async function tempDir(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  return {
    dir,
    remove: async () => {
      await removeEmbeddedPostgres(path.join(dir, 'postgres'));
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

export interface TestPlatform extends RunningPlatform {
  url: string;
  /** Removes the data directory too, unless the platform used external services. */
  stop(): Promise<void>;
}

/** The whole platform in this process on an ephemeral port, embedded services under a temp dir. */
export async function startTestPlatform(env: Record<string, string> = {}): Promise<TestPlatform> {
  const data = await tempDir('bd-test-');
  const config = loadConfig({ DATA_DIR: data.dir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', BUNDLED_BASE_MODEL: 'tiny-random', ...env });
  const platform = await startPlatform(config, pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }));
  return {
    ...platform,
    url: platform.url!,
    stop: async () => {
      await platform.stop();
      await data.remove();
    },
  };
}

export interface GraphQLResponse {
  status: number;
  data?: Record<string, any> | null;
  errors?: { message: string; path?: string[]; extensions?: { code?: string } }[];
}

/** One GraphQL request over real HTTP. */
export async function gql(
  url: string,
  query: string,
  variables: Record<string, unknown> = {},
  key?: string,
): Promise<GraphQLResponse> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, ...((await response.json()) as object) };
}

/** The data of a request expected to succeed; throws with the errors otherwise. */
export async function ok(response: Promise<GraphQLResponse>): Promise<Record<string, any>> {
  const r = await response;
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data!;
}

/** The first error's code, or undefined when the request succeeded. */
export const errorCode = (response: GraphQLResponse): string | undefined => response.errors?.[0]?.extensions?.code;

/** A signed-up user: their id and API key. */
export interface TestUser {
  key: string;
  userId: string;
}

/** Signs up through the API and returns the new user's key. */
export async function signUp(url: string, email: string): Promise<TestUser> {
  const response = await gql(url, 'mutation($email: String!) { signUp(email: $email) { secret user { id } } }', {
    email,
  });
  if (!response.data) throw new Error(`sign-up failed: ${JSON.stringify(response.errors)}`);
  return { key: response.data.signUp.secret, userId: response.data.signUp.user.id };
}

/** Every `jobUpdated` of a job, in order, until the server completes the subscription; `onUpdate` sees each as it comes. */
export function followJob<T>(url: string, key: string | undefined, subscription: string, jobId: string, onUpdate: (update: T) => void = () => {}): Promise<T[]> {
  const client = createClient({ url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, connectionParams: key ? { authorization: `Bearer ${key}` } : {}, retryAttempts: 0 });
  const updates: T[] = [];
  return new Promise<T[]>((resolve, reject) => {
    client.subscribe<{ jobUpdated: T }>(
      { query: subscription, variables: { id: jobId } },
      {
        next: ({ data, errors }) => {
          if (errors) return reject(Object.assign(new Error(errors[0].message), { errors }));
          updates.push(data!.jobUpdated);
          onUpdate(data!.jobUpdated);
        },
        error: (error) => reject(Array.isArray(error) ? Object.assign(new Error(error[0].message), { errors: error }) : error),
        complete: () => resolve(updates),
      },
    );
  }).finally(() => client.dispose());
}

/** One GraphQL operation over a fresh graphql-ws WebSocket; rejects with the close code when refused. */
export async function wsGql(
  url: string,
  query: string,
  variables: Record<string, unknown> = {},
  key?: string,
): Promise<GraphQLResponse> {
  const client = createClient({
    url: url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    connectionParams: key ? { authorization: `Bearer ${key}` } : {},
    retryAttempts: 0,
    lazy: true,
  });
  try {
    return await new Promise<GraphQLResponse>((resolve, reject) => {
      let result: GraphQLResponse = { status: 101 };
      client.subscribe(
        { query, variables },
        {
          next: (value) => (result = { status: 101, ...(value as object) }),
          // An array: the server's GraphQL errors for this operation; otherwise the socket closed.
          error: (error) =>
            Array.isArray(error)
              ? resolve({ status: 101, errors: error })
              : reject(new Error(`closed ${(error as { code?: number }).code ?? String(error)}`)),
          complete: () => resolve(result),
        },
      );
    });
  } finally {
    await client.dispose();
  }
}

/** A GraphQL multipart request (the spec graphql-upload implements) with one file at variable `file`. */
export async function gqlUpload(
  url: string,
  query: string,
  variables: Record<string, unknown>,
  file: { bytes: Uint8Array; name: string; type: string },
  key?: string,
): Promise<GraphQLResponse> {
  const form = new FormData();
  form.set('operations', JSON.stringify({ query, variables: { ...variables, file: null } }));
  form.set('map', JSON.stringify({ 0: ['variables.file'] }));
  form.set('0', new Blob([file.bytes], { type: file.type }), file.name);
  const response = await fetch(url, {
    method: 'POST',
    // Apollo's CSRF protection lets multipart requests through only with a preflight-forcing header.
    headers: { 'apollo-require-preflight': 'true', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: form,
  });
  return { status: response.status, ...((await response.json()) as object) };
}

/**
 * The SQL statements `db` sends while `run` runs: TypeORM hands every statement to its logger before
 * sending it, so a counting logger in front of the platform's sees them all.
 */
export async function sqlDuring(db: DataSource, run: () => Promise<unknown>): Promise<string[]> {
  const target = db as { logger: Logger };
  const original = target.logger;
  const statements: string[] = [];
  target.logger = new Proxy(original, {
    get: (logger, property) =>
      property === 'logQuery'
        ? (query: string, ...rest: unknown[]) => {
            statements.push(query);
            return (logger.logQuery as (...args: unknown[]) => unknown).call(logger, query, ...rest);
          }
        : Reflect.get(logger, property),
  });
  try {
    await run();
  } finally {
    target.logger = original;
  }
  return statements;
}

/** The platform's embedded services as environment variables, for a second platform sharing them. */
export function sharedServices(platform: RunningPlatform): Record<string, string> {
  return {
    DATABASE_URL: platform.databaseUrl,
    S3_ENDPOINT: platform.s3.endpoint,
    S3_BUCKET: platform.s3.bucket,
    S3_ACCESS_KEY_ID: platform.s3.accessKeyId,
    S3_SECRET_ACCESS_KEY: platform.s3.secretAccessKey,
  };
}

/** One state of a job as `jobUpdated` streams it, and the subscription that asks for all of its fields. */
export interface JobUpdate {
  jobId: string;
  status: string;
  progress: number;
  step: number;
  steps: number;
  error: string | null;
  imageIds: string[];
}

export const JOB_UPDATES = 'subscription($id: ID!) { jobUpdated(jobId: $id) { jobId status progress step steps error imageIds } }';
