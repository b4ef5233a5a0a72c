import { sizeOf } from '../graph/shape';
import { EngineRuntimeError, type EngineWorker, type SessionHandle, type TensorData } from '../runtime';
import { type CompiledGraph, type SavedGraph, sessionModel, type TensorSpec } from './train-step';

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

function zerosLike({ dtype, shape }: TensorSpec): FloatData {
  const size = sizeOf(shape);
  if (dtype === 'float32') return { dtype, dims: [...shape], data: new Float32Array(size) };
  if (dtype === 'float64') return { dtype, dims: [...shape], data: new Float64Array(size) };
  throw new TrainerError(`trainable weights must be float32 or float64, got ${dtype}`);
}

function isCheckpoint(value: Record<string, FloatArray> | TrainerCheckpoint): value is TrainerCheckpoint {
  return typeof value.steps === 'number';
}

/**
 * Runs a compiled train step (see `compileTrainStep`) on an engine worker, keeping parameters and
 * AdamW moments on the host between steps. Their buffers move to the worker and back each step
 * instead of being copied; frozen weights stay inside the model, uploaded once with the session.
 */
export class Trainer {
  #steps = 0;
  #running = false;
  readonly #state = new Map<string, { param: FloatData; m: FloatData; v: FloatData }>();

  private constructor(
    private readonly worker: EngineWorker,
    private readonly session: SessionHandle,
    private readonly compiled: CompiledGraph | SavedGraph,
  ) {}

  /**
   * Opens the step's session; `initial` holds every trainable weight's starting values, or a checkpoint
   * (from `checkpoint()`) continues a run where it stopped, moments and step count included.
   */
  static async create(
    worker: EngineWorker, compiled: CompiledGraph | SavedGraph, initial: Record<string, FloatArray> | TrainerCheckpoint,
  ): Promise<Trainer> {
    const resumed = isCheckpoint(initial) ? initial : undefined;
    const values = resumed ? resumed.params : initial as Record<string, FloatArray>;
    for (const p of compiled.params) {
      const expected = sizeOf(p.shape);
      const fits = (array: FloatArray | undefined) => array?.length === expected && (p.dtype === 'float32') === array instanceof Float32Array;
      if (!fits(values[p.name]) || (resumed && (!fits(resumed.m[p.name]) || !fits(resumed.v[p.name])))) {
        throw new TrainerError(`${resumed ? 'checkpoint' : 'initial'} value of ${p.name} must be a ${p.dtype} array of ${expected} elements`);
      }
    }
    // Unfolded: the frozen weights' transposed copies would double them (see CreateSessionOptions.foldConstants).
    const session = await worker.createSession(sessionModel(compiled), { key: compiled.hash, foldConstants: false });
    const trainer = new Trainer(worker, session, compiled);
    for (const p of compiled.params) {
      const [param, m, v] = [zerosLike(p), zerosLike(p), zerosLike(p)];
      param.data.set(values[p.name]);
      if (resumed) {
        m.data.set(resumed.m[p.name]);
        v.data.set(resumed.v[p.name]);
      }
      trainer.#state.set(p.name, { param, m, v });
    }
    trainer.#steps = resumed?.steps ?? 0;
    return trainer;
  }

  /** A copy of the run's state; `Trainer.create` with it continues bit for bit where this trainer is now. */
  checkpoint(): TrainerCheckpoint {
    if (this.#running) throw new TrainerError('a step is running: await it before taking a checkpoint');
    const checkpoint: TrainerCheckpoint = { steps: this.#steps, params: {}, m: {}, v: {} };
    for (const [name, { param, m, v }] of this.#state) {
      checkpoint.params[name] = param.data.slice();
      checkpoint.m[name] = m.data.slice();
      checkpoint.v[name] = v.data.slice();
    }
    return checkpoint;
  }

  /** Steps taken so far. */
  get steps(): number {
    return this.#steps;
  }

  /** The current values of a trainable weight (a copy). */
  param(name: string): Float32Array | Float64Array {
    const state = this.#state.get(name);
    if (!state) throw new TrainerError(`${name} is not a trainable weight`);
    return state.param.data.slice();
  }

  /** One optimizer step on `batch` (copied, so the caller keeps it) at learning rate `lr`. */
  async step(batch: Record<string, TensorData>, lr: number): Promise<StepResult> {
    if (this.#running) throw new TrainerError('a step is already running: await it before the next');
    if (this.#state.size !== this.compiled.params.length) throw new TrainerError('a failed step lost this trainer\'s parameters');
    this.#running = true;
    try {
      return await this.#step(batch, lr);
    } finally {
      this.#running = false;
    }
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
    for (const [name, { param, m, v }] of this.#state) {
      feeds[name] = param;
      feeds[`m.${name}`] = m;
      feeds[`v.${name}`] = v;
    }
    feeds.step = { dtype: 'int64', dims: [], data: BigInt64Array.of(BigInt(this.#steps + 1)) };
    feeds.lr = { dtype: 'float32', dims: [], data: Float32Array.of(lr) };
    let out: Record<string, TensorData>;
    try {
      out = await this.worker.run(this.session, feeds);
    } catch (error) {
      // The state's buffers went to the worker with the feeds; a rejected run hands them back.
      const returned = error instanceof EngineRuntimeError ? error.feeds : undefined;
      for (const [name, state] of this.#state) {
        if (!returned?.[name]) {
          this.#state.clear();
          break;
        }
        Object.assign(state, { param: returned[name], m: returned[`m.${name}`], v: returned[`v.${name}`] });
      }
      throw new TrainerError(`train step failed${this.#state.size ? '' : ', parameters lost'}: ${(error as Error).message}`);
    }
    for (const [name, state] of this.#state) {
      state.param = out[`new.${name}`] as FloatData;
      state.m = out[`new_m.${name}`] as FloatData;
      state.v = out[`new_v.${name}`] as FloatData;
    }
    this.#steps++;
    return { loss: Number(out.loss.data[0]), gradNorm: Number(out.grad_norm.data[0]) };
  }

  async dispose(): Promise<void> {
    await this.worker.release(this.session);
  }
}
