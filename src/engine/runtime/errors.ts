import type { TensorData } from './tensor';

/** Why a runtime call failed; callers branch on `code`, people read `message`. */
export type EngineRuntimeErrorCode =
  | 'INVALID_DEVICE'
  | 'PROVIDER_UNAVAILABLE'
  | 'INVALID_TENSOR'
  | 'SESSION_CREATE_FAILED'
  | 'SESSION_RELEASED'
  | 'RUN_FAILED'
  | 'WORKER_CLOSED';

export class EngineRuntimeError extends Error {
  override readonly name = 'EngineRuntimeError';
  constructor(
    readonly code: EngineRuntimeErrorCode,
    message: string,
    /** A failed run's feeds, handed back: their buffers went to the worker, the caller's arrays are empty. */
    readonly feeds?: Record<string, TensorData>,
  ) {
    super(message);
  }
}
