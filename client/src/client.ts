import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';
import { createClient, type Client as SubscriptionClient } from 'graphql-ws';
import { ApiError, isApiError, JobFailedError, type GraphQLErrorBody } from './errors';
import {
  DefaultBaseModelDocument, GenerateImagesDocument, JobDocument, JobUpdatedDocument, SignUpDocument, StartFineTuneDocument, UploadInstanceImageDocument,
  type DefaultBaseModelQuery, type GenerateImagesInput, type JobFieldsFragment, type JobQuery, type JobStatus, type JobUpdatedSubscription,
  type SignUpMutation, type StartFineTuneInput, type StartFineTuneMutation, type UploadInstanceImageMutation,
} from './generated/graphql';

export type Job = JobFieldsFragment;
export type JobWithImages = JobQuery['job'];
export type Image = JobWithImages['images'][number];
/** One state of a job, as `jobUpdated` streams it. */
export type JobUpdate = JobUpdatedSubscription['jobUpdated'];
export type StartedFineTune = StartFineTuneMutation['startFineTune'];
export type InstanceImage = UploadInstanceImageMutation['uploadInstanceImage'];
export type BaseModel = DefaultBaseModelQuery['defaultBaseModel'];

export interface ClientOptions {
  /** The GraphQL endpoint, e.g. `http://localhost:4000/graphql`; image URLs are resolved against it. */
  url: string;
  /** Sent as `Authorization: Bearer <apiKey>` over HTTP and in graphql-ws connectionParams. */
  apiKey?: string;
  /**
   * A WebSocket class for following jobs live (the `ws` package where the runtime has none, as Node 20);
   * default the global WebSocket. Without one (or `null`), followJob polls.
   */
  webSocketImpl?: unknown;
  /** How often followJob asks for the job when it polls; default 1000 ms. */
  pollIntervalMs?: number;
}

export interface FollowOptions {
  /** Called with each new state, the first being the job's state when following starts. */
  onUpdate?: (update: JobUpdate) => void;
  signal?: AbortSignal;
}

const FINISHED: ReadonlySet<JobStatus> = new Set(['SUCCEEDED', 'FAILED', 'CANCELED']);

/** A typed client of the bigdiffusion API: one per API key. Call close() when done (it holds a WebSocket while following). */
export class BigDiffusionClient {
  readonly url: string;
  readonly #options: ClientOptions;
  #subscriptions: SubscriptionClient | null = null;

  constructor(options: ClientOptions) {
    this.url = options.url;
    this.#options = options;
  }

  /** Signs up (where the platform allows it) and returns a client with the new key; `secret` is shown only now. */
  static async signUp(options: Omit<ClientOptions, 'apiKey'>, email: string): Promise<{ client: BigDiffusionClient; secret: string; user: SignUpMutation['signUp']['user'] }> {
    const { signUp } = await new BigDiffusionClient(options).request(SignUpDocument, { email });
    return { client: new BigDiffusionClient({ ...options, apiKey: signUp.secret }), secret: signUp.secret, user: signUp.user };
  }

  /** Any query or mutation, typed by its document (the generated ones, or your own typed document nodes). */
  async request<TResult, TVariables extends Record<string, unknown>>(
    document: TypedDocumentNode<TResult, TVariables>,
    ...[variables]: TVariables extends Record<string, never> ? [] | [TVariables] : [TVariables]
  ): Promise<TResult> {
    return this.#send({ 'content-type': 'application/json' }, JSON.stringify({ query: print(document), variables: variables ?? {} }));
  }

  /** The base model new models start from unless you pick another, with the image size it trains and draws at. */
  async defaultBaseModel(): Promise<BaseModel> {
    return (await this.request(DefaultBaseModelDocument)).defaultBaseModel;
  }

  /**
   * Uploads a training photo (JPEG, PNG or WebP) as a GraphQL multipart request, with the header that
   * Apollo's CSRF protection asks of multipart requests. Without `conceptId` it is staged for startFineTune.
   */
  async uploadPhoto(photo: Blob | Uint8Array, options: { filename?: string; conceptId?: string } = {}): Promise<InstanceImage> {
    const form = new FormData();
    form.set('operations', JSON.stringify({ query: print(UploadInstanceImageDocument), variables: { file: null, conceptId: options.conceptId ?? null } }));
    form.set('map', JSON.stringify({ 0: ['variables.file'] }));
    form.set('0', photo instanceof Blob ? photo : new Blob([new Uint8Array(photo)]), options.filename ?? 'photo');
    const data = await this.#send<UploadInstanceImageMutation>({ 'apollo-require-preflight': 'true' }, form);
    return data.uploadInstanceImage;
  }

  /** Queues a fine-tune: the job to follow, the model it trains, the concept (its `token` goes in prompts) and the contribution. */
  async startFineTune(input: StartFineTuneInput): Promise<StartedFineTune> {
    return (await this.request(StartFineTuneDocument, { input })).startFineTune;
  }

  /** Queues a generation; follow the job, then downloadImages(job.id). */
  async generateImages(input: GenerateImagesInput): Promise<Job> {
    return (await this.request(GenerateImagesDocument, { input })).generateImages;
  }

  async job(id: string): Promise<JobWithImages> {
    return (await this.request(JobDocument, { id })).job;
  }

  /**
   * Follows a job until it ends: live over graphql-ws where a WebSocket is available (subscribing again
   * if the server ends a subscriber that fell behind), else, or if the socket fails, by polling.
   * Resolves with the last state of a SUCCEEDED job; rejects with JobFailedError for FAILED or CANCELED.
   */
  async followJob(jobId: string, options: FollowOptions = {}): Promise<JobUpdate> {
    options.signal?.throwIfAborted();
    let last: JobUpdate | undefined;
    for (;;) {
      try {
        last = await this.#subscribe(jobId, options);
        break;
      } catch (error) {
        if (!isApiError(error, 'CONFLICT')) throw error;
      }
    }
    if (!last || !FINISHED.has(last.status)) last = await this.#poll(jobId, options);
    if (last.status !== 'SUCCEEDED') throw new JobFailedError(last);
    return last;
  }

  /** Downloads one generated PNG (the `url` of an Image) with this client's key. */
  async downloadImage(image: Pick<Image, 'url'>): Promise<Uint8Array> {
    const response = await this.#fetch(new URL(image.url, this.url), { headers: this.#authorization() });
    if (!response.ok) throw await this.#errorOf(response);
    return new Uint8Array(await response.arrayBuffer());
  }

  /** Every image a job made so far, in order, with its PNG. */
  async downloadImages(jobId: string): Promise<{ image: Image; png: Uint8Array }[]> {
    const { images } = await this.job(jobId);
    return Promise.all(images.map(async (image) => ({ image, png: await this.downloadImage(image) })));
  }

  /** Closes the WebSocket, if one is open. */
  async close(): Promise<void> {
    await this.#subscriptions?.dispose();
    this.#subscriptions = null;
  }

  /** The job's states over graphql-ws until the server completes; undefined where no socket is available or it failed. */
  #subscribe(jobId: string, { onUpdate, signal }: FollowOptions): Promise<JobUpdate | undefined> {
    const subscriptions = this.#subscriptionClient();
    if (!subscriptions) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      let last: JobUpdate | undefined;
      const fail = (error: unknown) => {
        stop();
        reject(error);
      };
      const stop = subscriptions.subscribe<JobUpdatedSubscription>(
        { query: print(JobUpdatedDocument), variables: { jobId } },
        {
          next: ({ data, errors }) => {
            if (errors?.length) return fail(ApiError.fromErrors(errors as GraphQLErrorBody[]));
            if (data) onUpdate?.((last = data.jobUpdated));
          },
          // An array: the API refused the operation; anything else is the socket's failure, and polling takes over.
          error: (error) => (Array.isArray(error) ? reject(ApiError.fromErrors(error)) : resolve(undefined)),
          complete: () => resolve(last),
        },
      );
      signal?.addEventListener('abort', () => fail(signal.reason), { once: true });
    });
  }

  async #poll(jobId: string, { onUpdate, signal }: FollowOptions): Promise<JobUpdate> {
    let seen = '';
    for (;;) {
      signal?.throwIfAborted();
      const job = await this.job(jobId);
      const update: JobUpdate = {
        jobId: job.id, status: job.status, progress: job.progress, step: job.step, steps: job.steps, loss: job.loss, error: job.error,
        imageIds: job.images.map((image) => image.id),
      };
      const key = JSON.stringify(update);
      if (key !== seen) onUpdate?.(update);
      seen = key;
      if (FINISHED.has(update.status)) return update;
      await new Promise((resolve) => setTimeout(resolve, this.#options.pollIntervalMs ?? 1000));
    }
  }

  #subscriptionClient(): SubscriptionClient | null {
    const webSocketImpl = this.#options.webSocketImpl === undefined ? (globalThis as { WebSocket?: unknown }).WebSocket : this.#options.webSocketImpl;
    if (!webSocketImpl) return null;
    this.#subscriptions ??= createClient({
      url: this.url.replace(/^http/, 'ws'),
      webSocketImpl,
      connectionParams: this.#authorization(),
      retryAttempts: 0,
    });
    return this.#subscriptions;
  }

  #authorization(): Record<string, string> {
    return this.#options.apiKey ? { authorization: `Bearer ${this.#options.apiKey}` } : {};
  }

  async #send<T>(headers: Record<string, string>, body: string | FormData): Promise<T> {
    const response = await this.#fetch(this.url, { method: 'POST', headers: { ...headers, ...this.#authorization() }, body });
    let result: { data?: T | null; errors?: GraphQLErrorBody[] };
    try {
      result = (await response.json()) as typeof result;
    } catch {
      throw new ApiError('NETWORK_ERROR', `${this.url} answered HTTP ${response.status} without a GraphQL result`);
    }
    if (result.errors?.length) throw ApiError.fromErrors(result.errors);
    if (!result.data) throw new ApiError('NETWORK_ERROR', `${this.url} answered HTTP ${response.status} without data`);
    return result.data;
  }

  async #fetch(url: string | URL, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, init);
    } catch (error) {
      throw new ApiError('NETWORK_ERROR', `${String(url)} cannot be reached: ${error instanceof Error ? (error.cause as Error | undefined)?.message ?? error.message : error}`);
    }
  }

  async #errorOf(response: Response): Promise<ApiError> {
    const body = (await response.json().catch(() => null)) as { errors?: GraphQLErrorBody[] } | null;
    return body?.errors?.length ? ApiError.fromErrors(body.errors) : new ApiError('NETWORK_ERROR', `HTTP ${response.status}`);
  }
}
