/**
 * The platform as the benchmark drives it: the whole of `startPlatform` (embedded PostgreSQL and S3, the job queue,
 * the worker, the GraphQL API) over a data folder that outlives the process, so a stopped run resumes. Fine-tunes go
 * through the API exactly as a client's do (upload the photos, startFineTune, wait for the job); the trained weights
 * (a LoRA or a whole UNet) are read back as the generate worker reads them.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config';
import { parseLoraFile, parseUNetWeights, type EngineWorker, type Example, type StableDiffusionModels } from '../../src/engine';
import { Model } from '../../src/entities';
import { startPlatform, type RunningPlatform } from '../../src/main';
import { splitPriorImages } from '../../src/services/big-split';
import { TrainingImages } from '../../src/services/training-images';
import { createAdmin } from '../../src/services/users';
import { versionWeights } from '../../src/services/versions';
import { pngOf } from './concepts';
import type { ArmWeights } from './scores';

/** What every arm trains: a LoRA of `rank` on the frozen UNet, or the whole UNet (full fine-tuning). */
export type ForgettingMethod = 'lora' | 'full';

export interface TrainingSettings {
  method: ForgettingMethod;
  steps: number;
  learningRate: number;
  /** LoRA only. */
  rank: number;
  seed: number;
  batchSize: number;
}

interface GqlResult {
  data?: Record<string, any> | null;
  errors?: { message: string; extensions?: { code?: string } }[];
}

export interface StartedFineTune {
  jobId: string;
  modelId: string;
  conceptId: string;
}

export class BenchPlatform {
  private constructor(
    readonly platform: RunningPlatform,
    private readonly key: string,
  ) {}

  static async start(dataDir: string): Promise<BenchPlatform> {
    const config = loadConfig({
      DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent',
      // One benchmark client submits everything; the per-user limits are for sharing a server.
      MAX_ACTIVE_JOBS_PER_USER: '1000', MAX_JOBS_PER_MINUTE_PER_USER: '100000', MAX_REQUESTS_PER_MINUTE_PER_KEY: '1000000',
    });
    const platform = await startPlatform(config, pino({ level: 'silent' }));
    try {
      const { secret } = await createAdmin(platform.services.db, 'forgetting-bench@example.org');
      return new BenchPlatform(platform, secret);
    } catch (error) {
      await platform.stop();
      throw error;
    }
  }

  get services() {
    return this.platform.services;
  }

  async stop(): Promise<void> {
    await this.platform.stop();
  }

  async gql(query: string, variables: Record<string, unknown> = {}): Promise<Record<string, any>> {
    return this.#post({ headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables }) });
  }

  /**
   * One request to the API, sent again when the connection drops before an answer (a kept-alive socket the server
   * closed meanwhile: seen under heavy load). Mutations that must not run twice carry an idempotency key.
   */
  async #post({ headers, body }: { headers: Record<string, string>; body: string | FormData }): Promise<Record<string, any>> {
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await fetch(this.platform.url!, { method: 'POST', headers: { ...headers, authorization: `Bearer ${this.key}` }, body });
        return this.#data((await response.json()) as GqlResult);
      } catch (error) {
        if (!(error instanceof TypeError && error.message === 'fetch failed') || attempt === 3) throw error;
      }
    }
  }

  #data(result: GqlResult): Record<string, any> {
    if (result.errors?.length || !result.data) throw new Error(`GraphQL: ${JSON.stringify(result.errors)}`);
    return result.data;
  }

  /** The pack's files under `base-models/<name>/` in the platform's bucket, registered as a base model (once per name). */
  async registerPack(packDir: string, name: string): Promise<string> {
    const known = (await this.gql('{ baseModels { id name } }')).baseModels as { id: string; name: string }[];
    const existing = known.find((b) => b.name === name);
    if (existing) return existing.id;
    for (const entry of await readdir(packDir, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const file = join(entry.parentPath, entry.name);
      await this.services.store.put(`base-models/${name}/${relative(packDir, file)}`, await readFile(file));
    }
    const registered = await this.gql('mutation($input: RegisterBaseModelInput!) { registerBaseModel(input: $input) { id } }', {
      input: { name, storageLocation: `base-models/${name}` },
    });
    return registered.registerBaseModel.id;
  }

  async createMetamodel(baseModelId: string, name: string): Promise<string> {
    const created = await this.gql('mutation($input: CreateModelInput!) { createModel(input: $input) { id } }', {
      input: { name, kind: 'PRIVATE_META', baseModelId },
    });
    return created.createModel.id;
  }

  async #upload(image: Uint8Array): Promise<string> {
    const form = new FormData();
    form.set('operations', JSON.stringify({ query: 'mutation($file: Upload!) { uploadInstanceImage(file: $file) { id } }', variables: { file: null } }));
    form.set('map', JSON.stringify({ 0: ['variables.file'] }));
    form.set('0', new Blob([new Uint8Array(await pngOf(image))], { type: 'image/png' }), 'photo.png');
    // A photo uploaded twice (its answer lost) is left staged, used by nothing.
    return (await this.#post({ headers: { 'apollo-require-preflight': 'true' }, body: form })).uploadInstanceImage.id;
  }

  /**
   * Uploads the concept's images and starts a fine-tune of `settings.method`: a new PRIVATE model from `baseModelId`,
   * or a contribution to the metamodel `modelId`. One example of each set per step (batch 1, no accumulation), center
   * crop (the images are the training size), no flip. `idempotencyKey` makes a request sent twice start one job.
   */
  async startFineTune(
    target: { baseModelId: string } | { modelId: string },
    concept: { token: string; category: string; kind: 'OBJECT' | 'STYLE'; images: Uint8Array[] },
    settings: TrainingSettings,
    idempotencyKey: string,
  ): Promise<StartedFineTune> {
    const instanceImageIds = [];
    for (const image of concept.images) instanceImageIds.push(await this.#upload(image));
    const input = {
      ...('modelId' in target ? { target: 'PRIVATE_META', modelId: target.modelId } : { target: 'PRIVATE', baseModelId: target.baseModelId }),
      token: concept.token, category: concept.category, kind: concept.kind, instanceImageIds,
      ...(settings.method === 'lora' ? { method: 'LORA', rank: settings.rank } : { method: 'FULL' }),
      steps: settings.steps, learningRate: settings.learningRate, seed: settings.seed, batchSize: settings.batchSize, gradientAccumulation: 1,
      centerCrop: true, flip: false, idempotencyKey,
    };
    const started = await this.gql('mutation($input: StartFineTuneInput!) { startFineTune(input: $input) { job { id } model { id } concept { id } } }', { input });
    const { job, model, concept: made } = started.startFineTune;
    return { jobId: job.id, modelId: model.id, conceptId: made.id };
  }

  /** Waits for a job to end; throws unless it succeeded. Returns the seconds it ran (queue wait excluded). */
  async waitForJob(jobId: string): Promise<number> {
    for (;;) {
      const { job } = await this.gql('query($id: ID!) { job(id: $id) { status error startedAt finishedAt } }', { id: jobId });
      if (job.status === 'SUCCEEDED') return (Date.parse(job.finishedAt) - Date.parse(job.startedAt)) / 1000;
      if (job.status === 'FAILED' || job.status === 'CANCELED') throw new Error(`fine-tune job ${jobId} ${job.status}: ${job.error}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  /** The weights at the model's head (a LoRA or a full UNet for `models`), as the generate worker loads them. */
  async headWeights(modelId: string, models: StableDiffusionModels): Promise<ArmWeights> {
    const { headVersionId } = await this.services.db.getRepository(Model).findOneByOrFail({ id: modelId });
    const weights = await versionWeights(this.services.db, modelId, headVersionId);
    if (weights.lora) return { lora: parseLoraFile(await this.services.store.get(weights.lora)) };
    if (weights.unet) return { unet: parseUNetWeights(models, await this.services.store.get(weights.unet)) };
    throw new Error(`model ${modelId} has no trained weights at its head`);
  }

  /**
   * The class images a plain (non-meta) DreamBooth run of `category` trains with: the platform's own split and its
   * cached class images (the same files its private fine-tunes use).
   */
  classImages(engine: EngineWorker, models: StableDiffusionModels, baseModelId: string, category: string, steps: number, resolution: number): Promise<Example[]> {
    const split = splitPriorImages({ priorImages: steps, category, learned: [], meta: false });
    return new TrainingImages(this.services, engine, resolution).prior(split, baseModelId, models, new AbortController().signal);
  }
}
