import type { EngineDevice } from './device';
import type { EngineRuntimeErrorCode } from './errors';
import type { TensorData } from './tensor';

/** The messages between `EngineWorker` (main thread) and `session-worker.js`; the worker mirrors these by hand. */

export type GraphOptimizationLevel = 'disabled' | 'basic' | 'extended' | 'all';

export interface WorkerSessionOptions {
  device: EngineDevice;
  graphOptimizationLevel: GraphOptimizationLevel;
  intraOpThreads: number;
  foldConstants: boolean;
  prepackWeights: boolean;
  memoryArena: boolean;
}

export type WorkerRequest =
  | { id: number; type: 'create'; key: string; model: Uint8Array | { path: string }; options: WorkerSessionOptions }
  | { id: number; type: 'run'; key: string; feeds: Record<string, TensorData>; outputNames?: string[] }
  | { id: number; type: 'release'; key: string }
  | { id: number; type: 'close' };

export interface CreatedSession {
  inputNames: string[];
  outputNames: string[];
}

export type WorkerResponse =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: { code: EngineRuntimeErrorCode; message: string }; feeds?: Record<string, TensorData> };
