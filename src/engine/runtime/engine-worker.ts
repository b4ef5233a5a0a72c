import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { PROVIDER_INSTALL_HINTS, type EngineDevice } from './device';
import { EngineRuntimeError } from './errors';
import type { CreatedSession, GraphOptimizationLevel, WorkerRequest, WorkerResponse, WorkerSessionOptions } from './protocol';
import { checkTensor, transferables, type TensorData } from './tensor';

export interface EngineWorkerOptions {
  /** Execution provider of every session this worker creates. Default `cpu`. */
  device?: EngineDevice;
  /** Default `all`. */
  graphOptimizationLevel?: GraphOptimizationLevel;
  /**
   * Threads onnxruntime uses inside one operator. Default: every core this process may use. onnxruntime's own
   * default, one per physical core as it counts them, ran one thread on the 2-vCPU dev VM, where two make a
   * 4-image generation of the emoji model 1.3x as fast.
   */
  intraOpThreads?: number;
  /**
   * The worker script. A bundled build copies `session-worker.js` beside its bundle, where this
   * default points after bundling; otherwise it is the file beside this module.
   */
  workerUrl?: URL;
  /** Where the worker loads onnxruntime-node from: a package name or a path. Default `onnxruntime-node`. */
  onnxruntimeModule?: string;
}

export interface CreateSessionOptions {
  /** A content key (e.g. the graph builder's hash) that spares hashing the bytes. */
  key?: string;
  /**
   * false keeps onnxruntime from folding constant subgraphs into new initializers. A train step wants that: its
   * backward pass transposes and flips the frozen weights, and folding stores those copies beside the originals
   * (a second 3.4 GB for an SD 1.5 UNet, and most of a minute of session creation). Default true.
   */
  foldConstants?: boolean;
  /**
   * false leaves constant weights as the model stores them instead of repacking them for onnxruntime's CPU matrix
   * kernels. Repacked weights are copies (3-4 GB more for an SD 1.5 UNet); left alone, the weights of a model saved
   * with external data are mapped from that file (clean file pages) instead of read into onnxruntime's memory.
   * Default true.
   */
  prepackWeights?: boolean;
  /** false allocates each CPU tensor on its own instead of from onnxruntime's arena, which grows and keeps what it took. Default true. */
  memoryArena?: boolean;
  /**
   * false stops graph optimization before the layout level ('all' becomes 'extended'): on the CPU that level
   * rewrites convolutions to a blocked layout with reordered copies of their weights (2.3 GB for an SD 1.5 UNet) and
   * takes minutes on a train step's graph. Default true.
   */
  layoutOptimizations?: boolean;
}

/** A session opened by `createSession`; valid until passed to `release`. */
export interface SessionHandle {
  readonly key: string;
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
}

interface CachedSession {
  refs: number;
  created: Promise<CreatedSession>;
}

/**
 * onnxruntime sessions on a worker thread, so creating and running them never blocks the event loop.
 * Sessions are cached by model content: creating the same graph again returns a new handle on the
 * same session, which is disposed when the last handle is released.
 */
export class EngineWorker {
  readonly device: EngineDevice;
  readonly #options: Omit<WorkerSessionOptions, 'foldConstants' | 'prepackWeights' | 'memoryArena'>;
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve: (value: any) => void; reject: (error: Error) => void }>();
  readonly #sessions = new Map<string, CachedSession>();
  readonly #live = new Set<SessionHandle>();
  #nextId = 1;
  #closed: EngineRuntimeError | null = null;

  constructor(options: EngineWorkerOptions = {}) {
    this.device = options.device ?? 'cpu';
    this.#options = {
      device: this.device,
      graphOptimizationLevel: options.graphOptimizationLevel ?? 'all',
      intraOpThreads: options.intraOpThreads ?? availableParallelism(),
    };
    this.#worker = new Worker(options.workerUrl ?? new URL('./session-worker.js', import.meta.url), {
      workerData: { onnxruntimeModule: options.onnxruntimeModule },
    });
    // An idle worker must not keep the process alive; it is referenced only while requests are pending.
    this.#worker.unref();
    this.#worker.on('message', (response: WorkerResponse) => this.#settle(response));
    this.#worker.on('error', (error) => this.#fail(`the engine worker crashed: ${error.message}`));
    this.#worker.on('exit', (code) => this.#fail(`the engine worker exited with code ${code}`));
  }

  /** Distinct sessions open in the worker (handles on one cached session count once). */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Opens a session on a model's bytes or on a model file (which may have external data beside it). */
  async createSession(model: Uint8Array | { path: string }, options: CreateSessionOptions = {}): Promise<SessionHandle> {
    const key = options.key ?? (await modelKey(model));
    let cached = this.#sessions.get(key);
    if (!cached) {
      const sessionOptions = {
        ...this.#options,
        graphOptimizationLevel: this.#options.graphOptimizationLevel === 'all' && options.layoutOptimizations === false
          ? 'extended' as const : this.#options.graphOptimizationLevel,
        foldConstants: options.foldConstants ?? true,
        prepackWeights: options.prepackWeights ?? true,
        memoryArena: options.memoryArena ?? true,
      };
      cached = { refs: 0, created: this.#request({ type: 'create', key, model, options: sessionOptions }) };
      this.#sessions.set(key, cached);
      const attempt = cached;
      attempt.created.catch(() => {
        if (this.#sessions.get(key) === attempt) this.#sessions.delete(key);
      });
    }
    cached.refs++;
    let created: CreatedSession;
    try {
      created = await cached.created;
    } catch (error) {
      throw this.#explain(error as EngineRuntimeError);
    }
    const handle: SessionHandle = Object.freeze({ key, inputNames: created.inputNames, outputNames: created.outputNames });
    this.#live.add(handle);
    return handle;
  }

  /**
   * Runs a session. The feeds' buffers are transferred to the worker, not copied: afterwards the
   * caller's arrays are empty (pass copies to keep them). Outputs come back the same way, and so do
   * the feeds when onnxruntime rejects the run (as the error's `feeds`).
   */
  async run(handle: SessionHandle, feeds: Record<string, TensorData>, outputNames?: string[]): Promise<Record<string, TensorData>> {
    this.#assertLive(handle);
    for (const [name, tensor] of Object.entries(feeds)) checkTensor(name, tensor);
    return this.#request({ type: 'run', key: handle.key, feeds, outputNames }, transferables(Object.values(feeds)));
  }

  /** Gives up a handle; the session is disposed when no handle on it remains. */
  async release(handle: SessionHandle): Promise<void> {
    this.#assertLive(handle);
    this.#live.delete(handle);
    const cached = this.#sessions.get(handle.key)!;
    if (--cached.refs > 0) return;
    this.#sessions.delete(handle.key);
    await this.#request({ type: 'release', key: handle.key });
  }

  /** Disposes every session and stops the worker; later calls fail with WORKER_CLOSED. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#request({ type: 'close' });
    this.#fail('the engine worker was closed');
    await this.#worker.terminate();
  }

  #assertLive(handle: SessionHandle): void {
    if (this.#closed) throw this.#closed;
    if (!this.#live.has(handle)) {
      throw new EngineRuntimeError('SESSION_RELEASED', `session ${handle.key} was released or belongs to another worker`);
    }
  }

  #request<T>(message: DistributiveOmit<WorkerRequest, 'id'>, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      if (this.#pending.size === 0) this.#worker.ref();
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ ...message, id }, transfer);
    });
  }

  #settle(response: WorkerResponse): void {
    const pending = this.#pending.get(response.id);
    if (!pending) return;
    this.#pending.delete(response.id);
    if (this.#pending.size === 0) this.#worker.unref();
    if (response.ok) pending.resolve(response.result);
    else pending.reject(new EngineRuntimeError(response.error.code, response.error.message, response.feeds));
  }

  #fail(message: string): void {
    this.#closed ??= new EngineRuntimeError('WORKER_CLOSED', message);
    for (const { reject } of this.#pending.values()) reject(this.#closed);
    this.#pending.clear();
    this.#sessions.clear();
    this.#live.clear();
  }

  #explain(error: EngineRuntimeError): EngineRuntimeError {
    if (error.code !== 'PROVIDER_UNAVAILABLE') return error;
    return new EngineRuntimeError(
      'PROVIDER_UNAVAILABLE',
      `ENGINE_DEVICE=${this.device} is not available here (${error.message}); ${PROVIDER_INSTALL_HINTS[this.device]}`,
    );
  }
}

/** Bytes are keyed by content; a file by its absolute path, size and modification time. */
async function modelKey(model: Uint8Array | { path: string }): Promise<string> {
  if (model instanceof Uint8Array) return createHash('sha256').update(model).digest('hex');
  const path = resolve(model.path);
  try {
    const { size, mtimeMs } = await stat(path);
    return `${path}#${size}@${mtimeMs}`;
  } catch {
    throw new EngineRuntimeError('SESSION_CREATE_FAILED', `model file ${path} cannot be read`);
  }
}

type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;
