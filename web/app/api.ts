// The page's only door to the platform: GraphQL over HTTP and graphql-ws, uploads, image downloads.
import { createClient, type Client } from 'graphql-ws';

const KEY_STORAGE = 'bigdiffusion.apiKey';
const GRAPHQL_PATH = '/graphql';

/** An error the API answered (its message and `extensions.code`), or a failure to reach it. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

interface GraphQLErrorBody {
  message: string;
  extensions?: { code?: string };
}

export const storedKey = (): string | null => localStorage.getItem(KEY_STORAGE);

export function storeKey(key: string | null): void {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
  subscriptions?.dispose();
  subscriptions = null;
}

const authorization = (key: string | null): Record<string, string> => (key ? { authorization: `Bearer ${key}` } : {});

function toApiError(errors: readonly GraphQLErrorBody[]): ApiError {
  const message = errors.map((e) => e.message).join('\n');
  return new ApiError(message, errors[0]?.extensions?.code);
}

async function readResult<T>(response: Response): Promise<T> {
  let body: { data?: T | null; errors?: GraphQLErrorBody[] };
  try {
    body = await response.json();
  } catch {
    throw new ApiError(`The server answered HTTP ${response.status} without a GraphQL result`);
  }
  if (body.errors?.length) throw toApiError(body.errors);
  if (!response.ok || !body.data) throw new ApiError(`The server answered HTTP ${response.status}`);
  return body.data;
}

async function post(init: RequestInit): Promise<Response> {
  try {
    return await fetch(GRAPHQL_PATH, { method: 'POST', ...init });
  } catch {
    throw new ApiError('The API cannot be reached');
  }
}

/** One query or mutation with the given key (default: the stored one). */
export async function gql<T>(query: string, variables: Record<string, unknown> = {}, key = storedKey()): Promise<T> {
  const response = await post({
    headers: { 'content-type': 'application/json', ...authorization(key) },
    body: JSON.stringify({ query, variables }),
  });
  return readResult<T>(response);
}

/** A GraphQL multipart request (the spec graphql-upload implements) with `file` as variable `$file`. */
export async function gqlUpload<T>(query: string, file: File, variables: Record<string, unknown> = {}): Promise<T> {
  const form = new FormData();
  form.set('operations', JSON.stringify({ query, variables: { ...variables, file: null } }));
  form.set('map', JSON.stringify({ 0: ['variables.file'] }));
  form.set('0', file, file.name);
  // Apollo's CSRF protection lets multipart requests through only with a preflight-forcing header.
  const response = await post({ headers: { 'apollo-require-preflight': 'true', ...authorization(storedKey()) }, body: form });
  return readResult<T>(response);
}

let subscriptions: Client | null = null;

function subscriptionClient(): Client {
  subscriptions ??= createClient({
    url: new URL(GRAPHQL_PATH, location.href).href.replace(/^http/, 'ws'),
    connectionParams: authorization(storedKey()),
    retryAttempts: 0,
  });
  return subscriptions;
}

/** Every result of a subscription until the server completes it; rejects with the API's error. */
export function subscribe<T>(query: string, variables: Record<string, unknown>, onData: (data: T) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    subscriptionClient().subscribe<T>(
      { query, variables },
      {
        next: ({ data, errors }) => {
          if (errors?.length) reject(toApiError(errors));
          else if (data) onData(data);
        },
        error: (error) => {
          if (Array.isArray(error)) return reject(toApiError(error));
          const code = (error as CloseEvent | undefined)?.code;
          reject(new ApiError(code === 4403 ? 'The API key was refused' : `The live connection closed${code ? ` (${code})` : ''}`));
        },
        complete: resolve,
      },
    );
  });
}

/** Downloads an image with the stored key (an <img src> cannot send one) as an object URL. */
export async function imageObjectUrl(path: string): Promise<string> {
  let response: Response;
  try {
    response = await fetch(path, { headers: authorization(storedKey()) });
  } catch {
    throw new ApiError('The image cannot be downloaded');
  }
  if (!response.ok) {
    const body = (await response.json().catch(() => null)) as { errors?: GraphQLErrorBody[] } | null;
    throw body?.errors?.length ? toApiError(body.errors) : new ApiError(`Image download failed: HTTP ${response.status}`);
  }
  return URL.createObjectURL(await response.blob());
}
