export { generateClassImages, type ClassImagesOptions, type ClassImagesRequest } from './class-images';
export {
  DreamBoothError, DreamBoothTrainer, trainDreamBooth, type DreamBoothCheckpoint, type DreamBoothCheckpoints, type DreamBoothOptions, type DreamBoothProgress, type DreamBoothRequest,
  type DreamBoothResult, type DreamBoothTrainerOptions, type Example, type LatentBatch, type TrainingMethod, type TrainingStart,
  type UNetTrainingModels,
} from './dreambooth';
export { parseDreamBoothCheckpoint, serializeDreamBoothCheckpoint } from './dreambooth-checkpoint';
export {
  cropOrigin, ImageInputError, loadTrainingPicture, trainingPixels, type ImageInputErrorCode, type TrainingPicture, type TrainingPixels, type TrainingView,
} from './images';
export { loraFromSlots, parseLoraFile, serializeLora, type LoraWeights } from './lora-file';
export { openGraphSession } from './sessions';
export {
  attachWeights, checkStableDiffusionPack, imageGeometry, loadStableDiffusion, loadStableDiffusionFrom, packImageGeometry, packScheduler, parseUNetWeights,
  serializeUNet, withUNetWeights, type ImageGeometry, type StableDiffusionModels,
} from './stable-diffusion';
export {
  encodePngs, txt2imgProblem, Txt2ImgError, Txt2ImgPipeline, type Txt2ImgOptions, type Txt2ImgPipelineOptions, type Txt2ImgProgress, type Txt2ImgRequest,
  type Txt2ImgResult,
} from './txt2img';
export {
  type PretrainStep, TEXT_ENCODER_PREFIX, textToImageLoss, textToImageTrainStep, type TextToImageStepShape, vaeTrainStep, type VaeStepShape,
} from './pretrain';
