/**
 * The engine's public API: what the platform (services, worker, storage) uses. The platform imports from
 * here, never from the engine's folders (a test keeps it so), and the engine imports nothing of the
 * platform, so the engine can reorganise its modules freely.
 */
export { ModelConfigError } from './models/config';
export { DEFAULT_LORA_RANK, LoraError, loraRank, type LoraLayer } from './models/lora';
export { BUNDLED_TINY_SD, createRandomPack, type PackPreset } from './packs';
export {
  checkStableDiffusionPack, DreamBoothError, encodePngs, generateClassImages, imageGeometry, ImageInputError, loadStableDiffusion,
  loadStableDiffusionFrom, loadTrainingPicture, loraFromSlots, packImageGeometry, packScheduler, parseDreamBoothCheckpoint, parseLoraFile, parseUNetWeights,
  serializeDreamBoothCheckpoint, serializeLora, serializeUNet, trainDreamBooth, txt2imgProblem, Txt2ImgError, Txt2ImgPipeline, withUNetWeights,
  type DreamBoothCheckpoint, type DreamBoothProgress, type DreamBoothRequest, type Example, type ImageGeometry, type StableDiffusionModels, type TrainingMethod,
  type TrainingStart, type Txt2ImgProgress, type Txt2ImgRequest,
} from './pipelines';
export { ENGINE_DEVICES, EngineRuntimeError, EngineWorker, parseEngineDevice, type EngineDevice } from './runtime';
export { SAMPLER_NAMES, type SamplerName, type SchedulerName } from './schedulers';
export { ClipTokenizer, loadClipTokenizerFrom, TokenizerError } from './tokenizer';
export { WeightBindingError } from './weights/bind';
export { FolderPackSource, loadPack, PackError, type Pack, type PackSource, type RangedPackSource } from './weights/pack';
export { fromFloat32, parseSafetensors, readSafetensorsHeader, serializeSafetensors, type StoredTensor } from './weights/safetensors';
