/**
 * The engine's public API: what the platform (services, jobs, storage) uses. The platform imports from
 * here, never from the engine's folders, so the engine can reorganise its modules freely.
 */
export { ModelConfigError } from './models/config';
export { LoraError, parseUNetLora, type LoraLayer } from './models/lora';
export { BUNDLED_TINY_SD, createRandomPack, type PackPreset } from './packs';
export {
  DreamBoothError, encodePngs, generateClassImages, ImageInputError, loadStableDiffusion, loadStableDiffusionFrom,
  loadTrainingImage, parseUNetWeights, serializeLora, serializeUNet, trainDreamBooth, Txt2ImgError, Txt2ImgPipeline,
  withUNetWeights,
  type DreamBoothProgress, type DreamBoothRequest, type Example, type StableDiffusionModels, type TrainingMethod,
  type TrainingStart, type Txt2ImgProgress, type Txt2ImgRequest,
} from './pipelines';
export { ENGINE_DEVICES, EngineRuntimeError, EngineWorker, parseEngineDevice, type EngineDevice } from './runtime';
export { SCHEDULER_NAMES, type SchedulerName } from './schedulers';
export { ClipTokenizer, loadClipTokenizerFrom, TokenizerError } from './tokenizer';
export { WeightBindingError } from './weights/bind';
export { FolderPackSource, loadPack, PackError, type Pack, type PackSource } from './weights/pack';
export { parseSafetensors, SafetensorsError } from './weights/safetensors';
