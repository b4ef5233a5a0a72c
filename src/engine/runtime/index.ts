export { ENGINE_DEVICES, parseEngineDevice, type EngineDevice } from './device';
export { EngineWorker, type CreateSessionOptions, type EngineWorkerOptions, type SessionHandle } from './engine-worker';
export { EngineRuntimeError, type EngineRuntimeErrorCode } from './errors';
export { memoryStats, type MemoryStats } from './memory';
export type { GraphOptimizationLevel } from './protocol';
export type { TensorData, TensorDType } from './tensor';
