import { sizeOf } from '../graph/shape';
import { EngineRuntimeError, type EngineWorker, type SessionHandle, type TensorData } from '../runtime';
import { FlatLayout } from './flat-params';
import { type CompiledGraph, type SavedGraph, sessionModel } from './train-step';

type FloatData = Extract<TensorData, { dtype: 'float32' | 'float64' }>;

export class TrainerError extends Error {
  override name = 'TrainerError';
}

export interface StepResult {
  loss: number;
  gradNorm: number;
}

type FloatArray = Float32Array | Float64Array;

/** Everything a train step carries from one step to the next: enough to continue a run exactly. */
export interface TrainerCheckpoint {
  /** Steps taken so far (AdamW's bias correction depends on it). */
  steps: number;
  params: Record<string, FloatArray>;
  /** AdamW's first and second moments, by parameter name. */
  m: Record<string, FloatArray>;
  v: Record<string, FloatArray>;
}

function isCheckpoint(value: Record<string, FloatArray> | TrainerCheckpoint): value is TrainerCheckpoint {
  return typeof value.steps === 'number';
}

/**
 * Runs a compiled train step (see `compileTrainStep`) on an engine worker, keeping the flat parameters and
 * AdamW moments on the host between steps. Their three buffers move to the worker and back each step instead
 * of being copied; frozen weights stay inside the model, uploaded once with the session.
 */
export class Trainer {
  #steps = 0;
  #running = false;
  /** The flat `params`, `m` and `v`; undefined once a failed step lost them. */
  #state: { params: FloatData; m: FloatData; v: FloatData } | undefined;

  private constructor(
    private readonly worker: EngineWorker,
    private readonly session: SessionHandle,
    private readonly compiled: CompiledGraph | SavedGraph,
    private readonly layout: FlatLayout,
  ) {}

  /**
   * Opens the step's session; `initial` holds every trainable weight's starting values, or a checkpoint
   * (from `checkpoint()`) continues a run where it stopped, moments and step count included.
   */
  /**
   * `lowMemory`: the session keeps the frozen weights once (not folded into transposed or flipped copies, not
   * repacked or reordered: a saved step's are then mapped from its file) and has no arena keeping the backward pass's
   * largest temporaries for good (bench/RESULTS.md, "Training memory on CPU"). It gives up onnxruntime's blocked
   * layouts and prepacked weights, which make small steps faster: for steps that would not fit otherwise.
   */
  static async create(
    worker: EngineWorker, compiled: CompiledGraph | SavedGraph, initial: Record<string, FloatArray> | TrainerCheckpoint,
    { lowMemory = false }: { lowMemory?: boolean } = {},
  ): Promise<Trainer> {
    const layout = new FlatLayout(compiled.params);
    const resumed = isCheckpoint(initial) ? initial : undefined;
    const values = resumed ? resumed.params : initial as Record<string, FloatArray>;
    for (const { name, dtype, shape } of compiled.params) {
      const fits = (array: FloatArray | undefined) => layout.fits(name, array);
      if (!fits(values[name]) || (resumed && (!fits(resumed.m[name]) || !fits(resumed.v[name])))) {
        throw new TrainerError(`${resumed ? 'checkpoint' : 'initial'} value of ${name} must be a ${dtype} array of ${sizeOf(shape)} elements`);
      }
    }
    // Unfolded: the frozen weights' transposed copies would double them (see CreateSessionOptions.foldConstants).
    const session = await worker.createSession(sessionModel(compiled), {
      key: compiled.hash, foldConstants: false, ...(lowMemory && { prepackWeights: false, memoryArena: false, layoutOptimizations: false }),
    });
    const trainer = new Trainer(worker, session, compiled, layout);
    const flat = (data: FloatArray) => ({ dtype: layout.dtype, dims: [layout.size], data }) as FloatData;
    trainer.#state = {
      params: flat(layout.pack(values)),
      m: flat(resumed ? layout.pack(resumed.m) : layout.zeros()),
      v: flat(resumed ? layout.pack(resumed.v) : layout.zeros()),
    };
    trainer.#steps = resumed?.steps ?? 0;
    return trainer;
  }

  /** A copy of the run's state, by weight name; `Trainer.create` with it continues bit for bit where this trainer is now. */
  checkpoint(): TrainerCheckpoint {
    if (this.#running) throw new TrainerError('a step is running: await it before taking a checkpoint');
    const { params, m, v } = this.#live();
    return { steps: this.#steps, params: this.layout.unpack(params.data), m: this.layout.unpack(m.data), v: this.layout.unpack(v.data) };
  }

  /** Steps taken so far. */
  get steps(): number {
    return this.#steps;
  }

  /** The current values of a trainable weight (a copy). */
  param(name: string): Float32Array | Float64Array {
    if (!this.layout.has(name)) throw new TrainerError(`${name} is not a trainable weight`);
    return this.layout.slice(this.#live().params.data, name);
  }

  /** One optimizer step on `batch` (copied, so the caller keeps it) at learning rate `lr`. */
  async step(batch: Record<string, TensorData>, lr: number): Promise<StepResult> {
    if (this.#running) throw new TrainerError('a step is already running: await it before the next');
    this.#live();
    this.#running = true;
    try {
      return await this.#step(batch, lr);
    } finally {
      this.#running = false;
    }
  }

  #live() {
    if (!this.#state) throw new TrainerError('a failed step lost this trainer\'s parameters');
    return this.#state;
  }

  async #step(batch: Record<string, TensorData>, lr: number): Promise<StepResult> {
    const feeds: Record<string, TensorData> = {};
    for (const input of this.compiled.batch) {
      const t = batch[input.name];
      if (!t || t.dtype !== input.dtype || t.dims.join() !== input.shape.join()) {
        throw new TrainerError(`batch input ${input.name} must be ${input.dtype}[${input.shape}]`);
      }
      feeds[input.name] = { ...t, data: t.data.slice() } as TensorData;
    }
    if (!Number.isFinite(lr) || lr < 0) throw new TrainerError(`lr must be a finite non-negative number, got ${lr}`);
    Object.assign(feeds, this.#state);
    feeds.step = { dtype: 'int64', dims: [], data: BigInt64Array.of(BigInt(this.#steps + 1)) };
    feeds.lr = { dtype: 'float32', dims: [], data: Float32Array.of(lr) };
    let out: Record<string, TensorData>;
    try {
      out = await this.worker.run(this.session, feeds);
    } catch (error) {
      // The state's buffers went to the worker with the feeds; a rejected run hands them back.
      const returned = error instanceof EngineRuntimeError ? error.feeds : undefined;
      this.#state = returned?.params && returned.m && returned.v
        ? { params: returned.params as FloatData, m: returned.m as FloatData, v: returned.v as FloatData }
        : undefined;
      throw new TrainerError(`train step failed${this.#state ? '' : ', parameters lost'}: ${(error as Error).message}`);
    }
    this.#state = { params: out.new_params as FloatData, m: out.new_m as FloatData, v: out.new_v as FloatData };
    this.#steps++;
    return { loss: Number(out.loss.data[0]), gradNorm: Number(out.grad_norm.data[0]) };
  }

  async dispose(): Promise<void> {
    await this.worker.release(this.session);
  }
}
